"""Schedules in the admin: the timetable list, the form and its validation, the actions."""

from __future__ import annotations

import datetime as dt
import decimal
import zoneinfo
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from django_pq.codec import encode_payload
from django_pq.models import Periodic, Status, Task
from django_pq.schedules import schedule
from tests.admin.conftest import VIEW_TASKS, make_task, messages_of, post_action
from tests.testapp import tasks

pytestmark = pytest.mark.django_db

ADD = "admin:django_pq_periodic_add"


def form_data(**overrides: Any) -> dict[str, Any]:
    """What a browser posts for a new five-minute schedule of ``tasks.add``."""
    data = {
        "task": "tests.testapp.tasks:add",
        "key": "",
        "args": "[1, 2]",
        "kwargs": "{}",
        "timing": "interval",
        "every": "5",
        "unit": "minutes",
        "cron": "",
        "timezone": "UTC",
        "active": "on",
        "priority": "50",
        "queue": "default",
        "max_concurrent": "1",
        "max_runtime": "",
        "max_attempts": "",
        "client_id": "",
    }
    return {**data, **overrides}


def errors_of(response: Any) -> dict[str, list[str]]:
    return {
        field: list(errors) for field, errors in response.context["adminform"].form.errors.items()
    }


def test_the_task_is_chosen_from_the_allowed_functions(admin_client: Client) -> None:
    html = admin_client.get(reverse(ADD)).content.decode()
    assert '<option value="tests.testapp.tasks:add">' in html
    assert '<option value="tests.testapp.tasks:async_add">async ' in html
    response = admin_client.post(reverse(ADD), form_data(task="os:system"))
    assert "task" in errors_of(response)
    assert not Periodic.objects.exists()


def test_create_an_interval_schedule(admin_client: Client) -> None:
    response = admin_client.post(
        reverse(ADD), form_data(kwargs='{"b": {"__pq__": "decimal", "v": "2.5"}}', args="[1]")
    )
    assert response.status_code == 302, errors_of(response)
    periodic = Periodic.objects.get()
    assert periodic.name == "tests.testapp.tasks:add"
    assert periodic.run_every == dt.timedelta(minutes=5)
    assert periodic.cron is None
    assert periodic.payload == encode_payload((1,), {"b": decimal.Decimal("2.5")})
    assert (
        # The first run is one interval from now (the database's now: the transaction's start).
        abs(periodic.next_run - dt.timedelta(minutes=5) - timezone.now()) < dt.timedelta(seconds=30)
    )
    assert not periodic.is_declared


def test_create_a_cron_schedule_in_a_time_zone(admin_client: Client) -> None:
    response = admin_client.post(
        reverse(ADD), form_data(timing="cron", cron="0  9 * * mon", timezone="Europe/Berlin")
    )
    assert response.status_code == 302, errors_of(response)
    periodic = Periodic.objects.get()
    assert (periodic.cron, periodic.run_every, periodic.timezone) == (
        "0 9 * * mon",
        None,
        "Europe/Berlin",
    )
    local = periodic.next_run.astimezone(zoneinfo.ZoneInfo("Europe/Berlin"))
    assert (local.weekday(), local.hour, local.minute) == (0, 9, 0)


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"timing": "cron", "cron": "61 * * * *"}, "cron", "not valid"),
        ({"timing": "cron", "cron": "* * *"}, "cron", "five fields"),
        ({"every": "0"}, "every", "at least 1"),
        ({"timing": "cron", "cron": "0 0 30 2 *"}, "cron", "never fires"),
        ({"timing": "cron", "cron": "0 0 31 4,6 *"}, "cron", "never fires"),
        ({"every": "99999999999", "unit": "days"}, "every", "too long"),
        ({"every": str(36525 * 86400 + 1), "unit": "seconds"}, "every", "too long"),
        ({"timezone": "Mars/Olympus"}, "timezone", "Mars/Olympus"),
        ({"args": "[1, 2"}, "args", "not valid JSON"),
        ({"args": '{"a": 1}'}, "args", "JSON an array"),
        ({"kwargs": "[1]"}, "kwargs", "JSON an object"),
        ({"kwargs": '{"a": {"__pq__": "nope", "v": 1}}'}, "kwargs", "cannot be decoded"),
        ({"priority": "101"}, "priority", "less than or equal to 100"),
        ({"max_concurrent": "0"}, "max_concurrent", "greater than or equal to 1"),
    ],
)
def test_invalid_input_is_refused_with_the_reason(
    admin_client: Client, overrides: dict[str, str], field: str, message: str
) -> None:
    response = admin_client.post(reverse(ADD), form_data(**overrides))
    assert response.status_code == 200
    errors = errors_of(response)
    assert field in errors, errors
    assert any(message in error for error in errors[field]), errors[field]
    assert not Periodic.objects.exists()


def test_a_second_schedule_of_a_function_needs_its_own_key(admin_client: Client) -> None:
    assert admin_client.post(reverse(ADD), form_data()).status_code == 302
    assert "key" in errors_of(admin_client.post(reverse(ADD), form_data()))
    assert admin_client.post(reverse(ADD), form_data(key="nightly")).status_code == 302
    assert Periodic.objects.count() == 2


def test_editing_the_timing_moves_next_run_and_other_edits_do_not(admin_client: Client) -> None:
    admin_client.post(reverse(ADD), form_data())
    periodic = Periodic.objects.get()
    url = reverse("admin:django_pq_periodic_change", args=[periodic.pk])
    html = admin_client.get(url).content.decode()
    assert 'value="[1, 2]"' in html or "[1, 2]</textarea>" in html
    first = periodic.next_run

    assert admin_client.post(url, form_data(priority="75")).status_code == 302
    periodic.refresh_from_db()
    assert (periodic.priority, periodic.next_run) == (75, first)

    assert (
        admin_client.post(url, form_data(priority="75", every="1", unit="hours")).status_code == 302
    )
    periodic.refresh_from_db()
    assert periodic.run_every == dt.timedelta(hours=1)
    assert periodic.next_run > first


def test_the_changelist_reads_like_a_timetable(admin_client: Client) -> None:
    periodic = schedule(tasks.noop, cron="0 9 * * 1", timezone="Europe/Berlin")
    run = make_task(
        Status.FAILED, periodic=periodic, slot=timezone.now(), name="tests.testapp.tasks:noop"
    )
    Periodic.objects.filter(pk=periodic.pk).update(last_run=timezone.now(), skipped_runs=3)
    html = admin_client.get(reverse("admin:django_pq_periodic_changelist")).content.decode()
    assert "Monday" in html and "Europe/Berlin" in html
    assert reverse("admin:django_pq_task_change", args=[run.pk]) in html
    assert "pq-status-failed" in html
    assert f"{reverse('admin:django_pq_task_changelist')}?periodic={periodic.pk}" in html


def test_preview_gives_the_next_five_runs(admin_client: Client) -> None:
    url = reverse("admin:django_pq_periodic_preview")
    runs = admin_client.get(
        url, {"timing": "cron", "cron": "30 9 * * *", "timezone": "Asia/Tokyo"}
    ).json()["runs"]
    assert len(runs) == 5
    assert all(" 09:30 JST" in run for run in runs)
    assert (
        "not valid"
        in admin_client.get(url, {"timing": "cron", "cron": "99 * * * *"}).json()["error"]
    )
    runs = admin_client.get(
        url, {"timing": "interval", "every": "2", "unit": "hours", "timezone": "UTC"}
    ).json()["runs"]
    assert len(runs) == 5
    never = admin_client.get(url, {"timing": "cron", "cron": "0 0 30 2 *"}).json()
    assert "never fires" in never["error"]
    huge = {"timing": "interval", "every": "99999999999", "unit": "days"}
    assert "too long" in admin_client.get(url, huge).json()["error"]


def test_the_change_page_shows_the_preview(admin_client: Client) -> None:
    periodic = schedule(tasks.noop, cron="15 6 * * *")
    html = admin_client.get(
        reverse("admin:django_pq_periodic_change", args=[periodic.pk])
    ).content.decode()
    assert html.count("06:15") >= 5


def test_declared_schedules_are_read_only(admin_client: Client) -> None:
    periodic = schedule(tasks.noop, run_every=dt.timedelta(minutes=1))
    Periodic.objects.filter(pk=periodic.pk).update(is_declared=True)
    url = reverse("admin:django_pq_periodic_change", args=[periodic.pk])
    assert (
        admin_client.post(url, form_data(task="tests.testapp.tasks:noop", every="9")).status_code
        == 403
    )
    periodic.refresh_from_db()
    assert periodic.run_every == dt.timedelta(minutes=1)


def test_pause_and_resume(admin_client: Client) -> None:
    active = schedule(tasks.noop, run_every=dt.timedelta(minutes=1))
    paused = schedule(tasks.add, 1, 2, run_every=dt.timedelta(minutes=1), active=False)

    response = post_action(admin_client, "periodic", "pause_schedules", [active, paused])
    assert messages_of(response) == ["Paused 1 schedule; 1 schedule already paused."]
    assert not Periodic.objects.filter(active=True).exists()

    response = post_action(admin_client, "periodic", "resume_schedules", [active, paused])
    assert messages_of(response) == ["Resumed 2 schedules."]
    assert Periodic.objects.filter(active=True).count() == 2


def test_run_now_fires_one_run_and_respects_max_concurrent(admin_client: Client) -> None:
    periodic = schedule(tasks.noop, run_every=dt.timedelta(hours=1))
    next_run = Periodic.objects.get().next_run

    response = post_action(admin_client, "periodic", "run_schedules_now", [periodic])
    assert messages_of(response) == ["Started 1 run."]
    run = Task.objects.get(periodic=periodic)
    assert run.status == Status.PENDING
    assert Periodic.objects.get().next_run == next_run

    response = post_action(admin_client, "periodic", "run_schedules_now", [periodic])
    assert (
        "skipped because max_concurrent runs are still pending or running"
        in messages_of(response)[0]
    )
    assert Task.objects.filter(periodic=periodic).count() == 1


@pytest.mark.parametrize(
    ("action", "codename"),
    [("pause_schedules", "pause_periodic"), ("run_schedules_now", "run_periodic_now")],
)
def test_schedule_actions_need_their_permission(
    staff_client: Callable[..., Client], action: str, codename: str
) -> None:
    periodic = schedule(tasks.noop, run_every=dt.timedelta(hours=1))
    others = {"pause_periodic", "run_periodic_now", "change_periodic"} - {codename}
    post_action(staff_client(*VIEW_TASKS, *others), "periodic", action, [periodic])
    assert Periodic.objects.get().active and not Task.objects.exists()
    post_action(staff_client(*VIEW_TASKS, codename), "periodic", action, [periodic])
    assert not Periodic.objects.get().active or Task.objects.exists()


def test_view_only_staff_can_neither_act_nor_edit(staff_client: Callable[..., Client]) -> None:
    client = staff_client(*VIEW_TASKS)
    periodic = schedule(tasks.noop, run_every=dt.timedelta(hours=1))
    html = client.get(reverse("admin:django_pq_periodic_changelist")).content.decode()
    assert 'name="action"' not in html
    url = reverse("admin:django_pq_periodic_change", args=[periodic.pk])
    assert (
        client.post(url, form_data(task="tests.testapp.tasks:noop", every="9")).status_code == 403
    )
    assert client.post(reverse(ADD), form_data()).status_code == 403
    for action in ("pause_schedules", "run_schedules_now", "delete_selected"):
        post_action(client, "periodic", action, [periodic])
    periodic.refresh_from_db()
    assert periodic.active and periodic.run_every == dt.timedelta(hours=1)
    assert not Task.objects.exists()


def test_read_only_schedule_pages_open(
    admin_client: Client, staff_client: Callable[..., Client]
) -> None:
    """A declared schedule (for everyone) and any schedule (for a view-only user) is shown
    read-only, with its definition and next runs."""
    made = schedule(tasks.add, 1, 2, cron="30 7 * * *", timezone="Asia/Tokyo")
    declared = schedule(tasks.noop, run_every=dt.timedelta(minutes=1))
    Periodic.objects.filter(pk=declared.pk).update(is_declared=True)
    viewer = staff_client(*VIEW_TASKS)
    for client, periodic in [(admin_client, declared), (viewer, declared), (viewer, made)]:
        response = client.get(reverse("admin:django_pq_periodic_change", args=[periodic.pk]))
        assert response.status_code == 200
        html = response.content.decode()
        assert periodic.name in html and 'name="_save"' not in html
    assert "07:30 JST" in html


def test_schedule_form_refuses_a_post_without_csrf_token(
    staff_client: Callable[..., Client],
) -> None:
    client = staff_client(*VIEW_TASKS, "add_periodic", enforce_csrf_checks=True)
    assert client.post(reverse(ADD), form_data()).status_code == 403
    assert not Periodic.objects.exists()
