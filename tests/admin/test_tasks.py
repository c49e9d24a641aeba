"""The task pages: list, filters, search, the read-only detail page, escaping, the banner."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from model_bakery import baker

from django_pq.codec import encode_payload, encode_value
from django_pq.models import ErrorCode, Periodic, Priority, Status, Task, Worker
from tests.admin.conftest import VIEW_TASKS, make_task

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:django_pq_task_changelist"


def listed_ids(response: object) -> list[int]:
    return [task.pk for task in response.context["cl"].result_list]  # type: ignore[attr-defined]


def test_changelist_shows_the_columns_staff_need(admin_client: Client) -> None:
    started = timezone.now() - dt.timedelta(seconds=12)
    make_task(
        Status.COMPLETED,
        priority=Priority.HIGH,
        attempts=1,
        max_attempts=3,
        started_at=started,
        finished_at=started + dt.timedelta(seconds=2.5),
        queue="mail",
    )
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert '<span class="pq-badge pq-status-completed">completed</span>' in html
    assert "HIGH" in html
    assert "1/3" in html
    assert "2.5 s" in html
    assert "mail" in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status__exact": "failed"}, ["failed"]),
        ({"queue": "mail"}, ["mail"]),
        ({"priority": str(Priority.HIGH.value)}, ["high"]),
        ({"name": "tests.testapp.tasks:noop"}, ["noop"]),
    ],
)
def test_filters(admin_client: Client, query: dict[str, str], expected: list[str]) -> None:
    rows = {
        "failed": make_task(Status.FAILED),
        "mail": make_task(queue="mail"),
        "high": make_task(priority=80),
        "noop": make_task(name="tests.testapp.tasks:noop"),
    }
    response = admin_client.get(reverse(CHANGELIST), query)
    assert listed_ids(response) == [rows[label].pk for label in expected]


def test_filter_by_schedule_and_worker(admin_client: Client) -> None:
    periodic = baker.make(Periodic, name="tests.testapp.tasks:noop", run_every=dt.timedelta(1))
    fired = make_task(periodic=periodic, slot=timezone.now())
    running = make_task(Status.RUNNING)
    make_task()
    response = admin_client.get(reverse(CHANGELIST), {"periodic": periodic.pk})
    assert listed_ids(response) == [fired.pk]
    response = admin_client.get(reverse(CHANGELIST), {"worker": str(running.worker_id)})
    assert listed_ids(response) == [running.pk]
    response = admin_client.get(reverse(CHANGELIST), {"worker": "not-a-uuid"})
    assert listed_ids(response) == []


def test_filter_lists_task_names_from_the_index(admin_client: Client) -> None:
    for name in ("tests.testapp.tasks:noop", "tests.testapp.tasks:add", "tests.testapp.tasks:add"):
        make_task(name=name)
    response = admin_client.get(reverse(CHANGELIST))
    name_filter = next(f for f in response.context["cl"].filter_specs if f.title == "task")
    assert [value for value, _ in name_filter.lookup_choices] == [
        "tests.testapp.tasks:add",
        "tests.testapp.tasks:noop",
    ]


@pytest.mark.parametrize("field", ["id", "client_id", "name"])
def test_search(admin_client: Client, field: str) -> None:
    wanted = make_task(name="tests.testapp.tasks:log_run", client_id="report-2026-11-26")
    make_task(name="tests.testapp.tasks:add", client_id="other")
    term = {"id": str(wanted.pk), "client_id": "report-2026-11-26", "name": "log_run"}[field]
    response = admin_client.get(reverse(CHANGELIST), {"q": term})
    assert listed_ids(response) == [wanted.pk]


def test_detail_shows_decoded_arguments_result_and_resources(admin_client: Client) -> None:
    when = dt.date(2026, 1, 31)
    task = make_task(
        Status.COMPLETED,
        payload=encode_payload((when,), {"amount": decimal.Decimal("9.50")}),
        result=encode_value({"ok": True}),
        peak_rss=50 * 1024 * 1024,
        cpu_seconds=0.25,
        worker_id=uuid.uuid4(),
    )
    html = admin_client.get(reverse("admin:django_pq_task_change", args=[task.pk])).content.decode()
    assert "datetime.date(2026, 1, 31)" in html
    assert "Decimal(&#x27;9.50&#x27;)" in html
    assert "{&#x27;ok&#x27;: True}" in html
    assert "50.0 MiB" in html
    assert "250 ms" in html
    assert reverse("admin:django_pq_worker_change", args=[task.worker_id]) in html


def test_an_undecodable_payload_is_shown_raw(admin_client: Client) -> None:
    task = make_task(payload={"args": [{"__pq__": "nope", "v": 1}], "kwargs": {}})
    html = admin_client.get(reverse("admin:django_pq_task_change", args=[task.pk])).content.decode()
    assert "cannot decode" in html
    assert "nope" in html


def test_error_text_with_markup_is_escaped(admin_client: Client) -> None:
    evil = '<script>alert("pwned")</script><b>bold</b>'
    task = make_task(
        Status.FAILED,
        name="tests.testapp.tasks:raise_error",
        error=f"Traceback (most recent call last):\nValueError: {evil}",
        error_code=ErrorCode.EXCEPTION,
        payload=encode_payload((evil,), {}),
    )
    for url in (
        reverse("admin:django_pq_task_change", args=[task.pk]),
        reverse(CHANGELIST),
        reverse("admin:django_pq_overview"),
    ):
        html = admin_client.get(url).content.decode()
        assert "<script>alert" not in html, url
        assert "<b>bold</b>" not in html, url
    detail = admin_client.get(reverse("admin:django_pq_task_change", args=[task.pk]))
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in detail.content.decode()


def test_periodic_task_page_links_its_schedule_and_history(admin_client: Client) -> None:
    periodic = baker.make(Periodic, name="tests.testapp.tasks:noop", run_every=dt.timedelta(1))
    now = timezone.now()
    older = make_task(Status.FAILED, periodic=periodic, slot=now - dt.timedelta(days=1))
    task = make_task(periodic=periodic, slot=now)
    html = admin_client.get(reverse("admin:django_pq_task_change", args=[task.pk])).content.decode()
    assert reverse("admin:django_pq_periodic_change", args=[periodic.pk]) in html
    assert reverse("admin:django_pq_task_change", args=[older.pk]) in html


def test_name_payload_and_status_cannot_be_edited(admin_client: Client) -> None:
    task = make_task(Status.FAILED)
    url = reverse("admin:django_pq_task_change", args=[task.pk])
    html = admin_client.get(url).content.decode()
    assert 'name="name"' not in html
    assert 'name="payload"' not in html
    assert 'name="status"' not in html
    response = admin_client.post(
        url,
        {
            "name": "os:system",
            "payload": '{"args": ["rm -rf /"], "kwargs": {}}',
            "status": "pending",
        },
    )
    assert response.status_code == 403
    task.refresh_from_db()
    assert (task.name, task.status) == ("tests.testapp.tasks:add", Status.FAILED)
    assert admin_client.get(reverse("admin:django_pq_task_add")).status_code == 403


def test_unfinished_tasks_cannot_be_deleted_from_their_page(admin_client: Client) -> None:
    running = make_task(Status.RUNNING)
    url = reverse("admin:django_pq_task_delete", args=[running.pk])
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert Task.objects.filter(pk=running.pk).exists()


def test_get_never_changes_state(admin_client: Client) -> None:
    tasks = [make_task(status) for status in Status.values]
    before = list(Task.objects.order_by("pk").values())
    for task in tasks:
        admin_client.get(reverse("admin:django_pq_task_change", args=[task.pk]))
        admin_client.get(reverse("admin:django_pq_task_delete", args=[task.pk]))
    admin_client.get(reverse(CHANGELIST), {"action": "delete_finished_tasks", "select_across": 1})
    admin_client.get(reverse("admin:django_pq_overview"))
    assert list(Task.objects.order_by("pk").values()) == before


def test_banner_when_no_worker_is_alive(staff_client: Callable[..., Client]) -> None:
    client = staff_client(*VIEW_TASKS)
    urls = [reverse(CHANGELIST), reverse("admin:django_pq_periodic_changelist"),
            reverse("admin:django_pq_overview")]  # fmt: skip
    for url in urls:
        assert "No live worker" in client.get(url).content.decode(), url
    baker.make(Worker, concurrency=1, lease_expires_at=timezone.now() + dt.timedelta(minutes=1))
    for url in urls:
        assert "No live worker" not in client.get(url).content.decode(), url


def test_a_lapsed_worker_does_not_count_as_alive(admin_client: Client) -> None:
    baker.make(Worker, concurrency=1, lease_expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert "No live worker" in admin_client.get(reverse(CHANGELIST)).content.decode()


def test_staff_without_view_permission_cannot_see_tasks(
    staff_client: Callable[..., Client],
) -> None:
    client = staff_client()
    assert client.get(reverse(CHANGELIST)).status_code == 403
    assert client.get(reverse("admin:django_pq_overview")).status_code == 403
