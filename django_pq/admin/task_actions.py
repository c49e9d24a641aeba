"""The task changelist's actions: retry, cancel, run now, delete finished.

Each action is gated by its own permission (see ``permissions.py``), touches only the
selected tasks in the states it applies to, with one statement that NOTIFYs like the
enqueue API so workers hear of the change, reports counts, and records what it changed in
the admin's history.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from django_pq.admin import history
from django_pq.conf import pq_settings
from django_pq.enqueueing import cancel_many, retry_many
from django_pq.models import FINISHED_STATUSES, Status, Task
from django_pq.store import tasks as store


def _tasks(count: int) -> str:
    return f"{count} task{'' if count == 1 else 's'}"


def _changed(task_ids: list[int]) -> QuerySet[Task]:
    return (
        Task.objects.using(pq_settings.DATABASE)
        .filter(pk__in=task_ids)
        .only("name", "status")
        .order_by("pk")
    )


def _report(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, done: str, skipped: int, why: str
) -> None:
    """One message saying what was done and, separately, what was left alone and why."""
    level = messages.SUCCESS if done else messages.WARNING
    text = done or "Nothing to do"
    if skipped:
        text = f"{text}; {_tasks(skipped)} left alone ({why})"
    modeladmin.message_user(request, f"{text}.", level)


@admin.action(description="Retry selected failed or cancelled tasks", permissions=["retry"])
def retry_tasks(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Task]
) -> None:
    """failed/cancelled → pending, to run now; the last error stays until the new run ends."""
    selected = list(queryset.values_list("pk", flat=True))
    retried = retry_many(selected)
    history.record(request, _changed(retried), "Retried from the admin.")
    done = f"Retried {_tasks(len(retried))}" if retried else ""
    _report(modeladmin, request, done, len(selected) - len(retried), "not failed or cancelled")


@admin.action(description="Cancel selected pending or running tasks", permissions=["cancel"])
def cancel_tasks(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Task]
) -> None:
    """pending → cancelled at once; running → marked, and its worker stops it."""
    selected = list(queryset.values_list("pk", flat=True))
    changed = cancel_many(selected)
    history.record(request, _changed([pk for pk, _ in changed]), "Cancelled from the admin.")
    stopping = sum(status == Status.RUNNING for _, status in changed)
    cancelled = len(changed) - stopping
    parts = []
    if cancelled:
        parts.append(f"Cancelled {_tasks(cancelled)}")
    if stopping:
        parts.append(f"asked workers to stop {_tasks(stopping)} running")
    done = "; ".join(parts)
    if done:
        done = done[0].upper() + done[1:]
    _report(modeladmin, request, done, len(selected) - cancelled - stopping, "already finished")


@admin.action(description="Run selected scheduled tasks now", permissions=["run_now"])
def run_tasks_now(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Task]
) -> None:
    """pending with a future ``run_at`` → ``run_at`` = now."""
    selected = list(queryset.values_list("pk", flat=True))
    moved = store.run_now(selected)
    history.record(request, _changed(moved), "Moved to run now from the admin.")
    done = f"Moved {_tasks(len(moved))} to run now" if moved else ""
    _report(
        modeladmin, request, done, len(selected) - len(moved), "not pending with a future run time"
    )


@admin.action(description="Delete selected finished tasks", permissions=["delete"])
def delete_finished_tasks(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Task]
) -> None:
    """Delete completed, failed and cancelled tasks; pending and running ones stay."""
    selected = queryset.count()
    finished = queryset.filter(status__in=FINISHED_STATUSES)
    history.record_deletion(request, finished.only("name", "status"))
    deleted, _ = finished.delete()
    done = f"Deleted {_tasks(deleted)}" if deleted else ""
    _report(modeladmin, request, done, selected - deleted, "not finished")
