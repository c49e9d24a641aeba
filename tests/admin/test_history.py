"""Every staff action lands in the admin's history: who did what to which row, and when."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from django_pq.models import Periodic, Status, Task
from django_pq.schedules import schedule
from tests.admin.conftest import make_task, post_action
from tests.testapp import tasks

pytestmark = pytest.mark.django_db


def entries() -> list[tuple[str, str, int, str, str]]:
    """(user, object id, flag, message, object repr) of every LogEntry, oldest first."""
    return [
        (entry.user.username, entry.object_id, entry.action_flag, entry.change_message,
         entry.object_repr)
        for entry in LogEntry.objects.select_related("user").order_by("pk")
    ]  # fmt: skip


def test_task_actions_log_one_entry_per_changed_task_and_none_for_the_rest(
    admin_client: Client, admin_user: User
) -> None:
    failed = make_task(Status.FAILED, error="boom", error_code="exception", attempts=1)
    pending = make_task(Status.PENDING)
    running = make_task(Status.RUNNING)
    completed = make_task(Status.COMPLETED)
    later = make_task(Status.PENDING, run_at=timezone.now() + dt.timedelta(days=1))

    post_action(admin_client, "task", "retry_tasks", [failed, completed])
    post_action(admin_client, "task", "cancel_tasks", [pending, running, completed])
    post_action(admin_client, "task", "run_tasks_now", [later, completed])

    logged = [(user, object_id, flag, message) for user, object_id, flag, message, _ in entries()]
    assert logged == [
        ("admin", str(failed.pk), CHANGE, "Retried from the admin."),
        ("admin", str(pending.pk), CHANGE, "Cancelled from the admin."),
        ("admin", str(running.pk), CHANGE, "Cancelled from the admin."),
        ("admin", str(later.pk), CHANGE, "Moved to run now from the admin."),
    ]
    # The name shown in the history is the row after the change.
    assert entries()[0][4] == f"tests.testapp.tasks:add #{failed.pk} (pending)"


def test_deleting_finished_tasks_logs_their_deletion(admin_client: Client) -> None:
    completed = make_task(Status.COMPLETED)
    pending = make_task(Status.PENDING)

    post_action(admin_client, "task", "delete_finished_tasks", [completed, pending])

    assert entries() == [
        ("admin", str(completed.pk), DELETION, "",
         f"tests.testapp.tasks:add #{completed.pk} (completed)"),
    ]  # fmt: skip
    assert Task.objects.filter(pk=pending.pk).exists()


def test_schedule_actions_are_logged_and_shown_on_the_history_page(
    admin_client: Client,
) -> None:
    periodic = schedule(tasks.noop, run_every=dt.timedelta(hours=1))

    post_action(admin_client, "periodic", "pause_schedules", [periodic])
    post_action(admin_client, "periodic", "pause_schedules", [periodic])  # already paused
    post_action(admin_client, "periodic", "resume_schedules", [periodic])
    post_action(admin_client, "periodic", "run_schedules_now", [periodic])

    assert [message for _, _, _, message, _ in entries()] == [
        "Paused from the admin.",
        "Resumed from the admin.",
        "Run started from the admin.",
    ]
    page = admin_client.get(reverse("admin:django_pq_periodic_history", args=[periodic.pk]))
    assert page.status_code == 200
    assert page.content.decode().count("from the admin.") == 3
    assert Periodic.objects.get().active


def test_the_task_history_page_lists_the_actions(admin_client: Client) -> None:
    failed = make_task(Status.FAILED, error="boom", error_code="exception", attempts=1)
    post_action(admin_client, "task", "retry_tasks", [failed])

    page = admin_client.get(reverse("admin:django_pq_task_history", args=[failed.pk]))

    assert page.status_code == 200
    assert "Retried from the admin." in page.content.decode()
