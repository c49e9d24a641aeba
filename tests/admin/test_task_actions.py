"""Task actions: each applies to its states only, checks its permission, and reports counts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import psycopg
import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from django_pq.models import ErrorCode, Status, Task
from tests.admin.conftest import VIEW_TASKS, make_task, messages_of, post_action
from tests.conftest import received

pytestmark = pytest.mark.django_db


def statuses(*tasks: Task) -> list[str]:
    return [Task.objects.get(pk=task.pk).status for task in tasks]


def test_retry_puts_failed_and_cancelled_back_and_leaves_the_rest(admin_client: Client) -> None:
    failed = make_task(Status.FAILED, error="boom", error_code=ErrorCode.EXCEPTION, attempts=1)
    cancelled = make_task(Status.CANCELLED, error_code=ErrorCode.CANCELLED)
    completed = make_task(Status.COMPLETED)
    running = make_task(Status.RUNNING)

    response = post_action(
        admin_client, "task", "retry_tasks", [failed, cancelled, completed, running]
    )

    assert statuses(failed, cancelled, completed, running) == [
        Status.PENDING, Status.PENDING, Status.COMPLETED, Status.RUNNING,
    ]  # fmt: skip
    assert messages_of(response) == [
        "Retried 2 tasks; 2 tasks left alone (not failed or cancelled)."
    ]


def test_cancel_stops_pending_and_asks_running_ones_to_stop(admin_client: Client) -> None:
    pending = make_task(Status.PENDING)
    running = make_task(Status.RUNNING)
    completed = make_task(Status.COMPLETED)

    response = post_action(admin_client, "task", "cancel_tasks", [pending, running, completed])

    assert statuses(pending, running, completed) == [
        Status.CANCELLED, Status.RUNNING, Status.COMPLETED,
    ]  # fmt: skip
    assert Task.objects.get(pk=running.pk).is_cancel_requested
    assert messages_of(response) == [
        "Cancelled 1 task; asked workers to stop 1 task running; 1 task left alone "
        "(already finished)."
    ]


def test_run_now_moves_only_future_pending_tasks(admin_client: Client) -> None:
    later = make_task(Status.PENDING, run_at=timezone.now() + dt.timedelta(days=1))
    ready = make_task(Status.PENDING, run_at=timezone.now() - dt.timedelta(minutes=1))
    failed = make_task(Status.FAILED, run_at=timezone.now() + dt.timedelta(days=1))

    response = post_action(admin_client, "task", "run_tasks_now", [later, ready, failed])

    assert Task.objects.get(pk=later.pk).run_at <= timezone.now()
    assert Task.objects.get(pk=ready.pk).run_at == ready.run_at
    assert Task.objects.get(pk=failed.pk).run_at == failed.run_at
    assert messages_of(response) == [
        "Moved 1 task to run now; 2 tasks left alone (not pending with a future run time)."
    ]


def test_run_now_wakes_the_workers(admin_client: Client, listener: psycopg.Connection) -> None:
    later = make_task(Status.PENDING, run_at=timezone.now() + dt.timedelta(days=1), queue="mail")
    post_action(admin_client, "task", "run_tasks_now", [later])
    payloads = received(listener, timeout=5, expect=1)
    assert len(payloads) == 1
    assert payloads[0].startswith("t:") and payloads[0].endswith(":mail")


def test_delete_finished_keeps_unfinished_tasks(admin_client: Client) -> None:
    finished = [make_task(status) for status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)]
    unfinished = [make_task(Status.PENDING), make_task(Status.RUNNING)]

    response = post_action(admin_client, "task", "delete_finished_tasks", finished + unfinished)

    assert not Task.objects.filter(pk__in=[task.pk for task in finished]).exists()
    assert Task.objects.filter(pk__in=[task.pk for task in unfinished]).count() == 2
    assert messages_of(response) == ["Deleted 3 tasks; 2 tasks left alone (not finished)."]


def test_an_action_with_nothing_to_do_says_so(admin_client: Client) -> None:
    completed = make_task(Status.COMPLETED)
    response = post_action(admin_client, "task", "retry_tasks", [completed])
    assert messages_of(response) == ["Nothing to do; 1 task left alone (not failed or cancelled)."]


ACTIONS = [
    ("retry_tasks", "retry_task", Status.FAILED, Status.PENDING),
    ("cancel_tasks", "cancel_task", Status.PENDING, Status.CANCELLED),
    ("delete_finished_tasks", "delete_task", Status.COMPLETED, None),
]


@pytest.mark.parametrize(("action", "codename", "before", "after"), ACTIONS)
def test_each_action_needs_its_own_permission(
    staff_client: Callable[..., Client], action: str, codename: str, before: str, after: str | None
) -> None:
    others = [c for _, c, _, _ in ACTIONS if c != codename] + ["run_task_now"]
    without = staff_client(*VIEW_TASKS, *others)
    task = make_task(before)

    post_action(without, "task", action, [task])
    assert statuses(task) == [before], "the action ran without its permission"

    with_it = staff_client(*VIEW_TASKS, codename)
    post_action(with_it, "task", action, [task])
    if after is None:
        assert not Task.objects.filter(pk=task.pk).exists()
    else:
        assert statuses(task) == [after]


def test_run_now_needs_its_permission(staff_client: Callable[..., Client]) -> None:
    run_at = timezone.now() + dt.timedelta(days=1)
    task = make_task(Status.PENDING, run_at=run_at)
    post_action(
        staff_client(*VIEW_TASKS, "retry_task", "cancel_task"), "task", "run_tasks_now", [task]
    )
    assert Task.objects.get(pk=task.pk).run_at == run_at
    post_action(staff_client(*VIEW_TASKS, "run_task_now"), "task", "run_tasks_now", [task])
    assert Task.objects.get(pk=task.pk).run_at < run_at


def test_view_only_staff_sees_no_actions(staff_client: Callable[..., Client]) -> None:
    make_task(Status.FAILED)
    response = staff_client(*VIEW_TASKS).get(reverse("admin:django_pq_task_changelist"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="action"' not in html
    assert "action-checkbox" not in html


def test_view_only_staff_sees_no_buttons_on_the_task_page(
    staff_client: Callable[..., Client],
) -> None:
    task = make_task(Status.FAILED)
    url = reverse("admin:django_pq_task_change", args=[task.pk])
    html = staff_client(*VIEW_TASKS).get(url).content.decode()
    assert "retry_tasks" not in html
    assert "retry_tasks" in staff_client(*VIEW_TASKS, "retry_task").get(url).content.decode()


def test_a_forged_post_from_view_only_staff_changes_nothing(
    staff_client: Callable[..., Client],
) -> None:
    client = staff_client(*VIEW_TASKS)
    failed = make_task(Status.FAILED)
    pending = make_task(Status.PENDING, run_at=timezone.now() + dt.timedelta(days=1))
    completed = make_task(Status.COMPLETED)
    for action in ("retry_tasks", "cancel_tasks", "run_tasks_now", "delete_finished_tasks",
                   "delete_selected"):  # fmt: skip
        post_action(client, "task", action, [failed, pending, completed])
        post_action(client, "task", action, [], select_across=1)
    assert statuses(failed, pending, completed) == [Status.FAILED, Status.PENDING, Status.COMPLETED]
    assert Task.objects.get(pk=pending.pk).run_at == pending.run_at


def test_actions_refuse_a_post_without_csrf_token(staff_client: Callable[..., Client]) -> None:
    client = staff_client(*VIEW_TASKS, "retry_task", enforce_csrf_checks=True)
    failed = make_task(Status.FAILED)
    response = client.post(
        reverse("admin:django_pq_task_changelist"),
        {"action": "retry_tasks", "_selected_action": [str(failed.pk)], "index": 0},
    )
    assert response.status_code == 403
    assert statuses(failed) == [Status.FAILED]


def test_get_with_action_parameters_changes_nothing(admin_client: Client) -> None:
    failed = make_task(Status.FAILED)
    pending = make_task(Status.PENDING)
    url = reverse("admin:django_pq_task_changelist")
    for action in ("retry_tasks", "cancel_tasks", "delete_finished_tasks"):
        response = admin_client.get(
            url, {"action": action, "_selected_action": [failed.pk, pending.pk]}
        )
        assert response.status_code in (200, 302)
    assert statuses(failed, pending) == [Status.FAILED, Status.PENDING]


def test_the_detail_page_buttons_post_the_action(admin_client: Client) -> None:
    failed = make_task(Status.FAILED)
    html = admin_client.get(
        reverse("admin:django_pq_task_change", args=[failed.pk])
    ).content.decode()
    assert 'value="retry_tasks"' in html
    assert 'value="cancel_tasks"' not in html, "a failed task cannot be cancelled"
    response = post_action(admin_client, "task", "retry_tasks", [failed])
    assert messages_of(response) == ["Retried 1 task."]


@pytest.mark.parametrize(
    ("action", "status"),
    [("retry_tasks", Status.FAILED), ("cancel_tasks", Status.PENDING)],
)
def test_a_bulk_action_costs_the_same_queries_for_one_task_or_many(
    admin_client: Client, action: str, status: str
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries_for(count: int) -> int:
        chosen = [make_task(status, error="boom", error_code="exception") for _ in range(count)]
        with CaptureQueriesContext(connection) as captured:
            post_action(admin_client, "task", action, chosen)
        assert {t.status for t in Task.objects.filter(pk__in=[t.pk for t in chosen])} != {status}
        return len(captured)

    assert queries_for(1) == queries_for(40)
