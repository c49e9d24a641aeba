"""Changelist filters for tasks that stay cheap on a table of millions of rows.

Django's stock ``list_filter = ["queue"]`` would run ``SELECT DISTINCT queue`` over the
whole table on every page view; these filters take their choices from small tables or
from an index instead.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeGuard

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from django_pq.conf import pq_settings
from django_pq.models import Periodic, Priority, Task, Worker
from django_pq.store import tasks as store

#: At most this many task names are listed in the name filter.
MAX_LISTED_NAMES = 100


def distinct_task_names(limit: int = MAX_LISTED_NAMES) -> list[str]:
    """The distinct task names in ``pq_tasks``, in order, read from the name index."""
    return store.distinct_names(limit)


def known_queues() -> list[str]:
    """Queues named by the default setting, the schedules and recently seen workers."""
    queues = {pq_settings.DEFAULT_QUEUE}
    queues.update(Periodic.objects.order_by().values_list("queue", flat=True).distinct())
    for worker_queues in Worker.objects.values_list("queues", flat=True):
        # A JSON column: a row written by hand may hold any JSON value, not only a list.
        if isinstance(worker_queues, list):
            queues.update(queue for queue in worker_queues if isinstance(queue, str))
    return sorted(queues)


def is_number(value: str | None) -> TypeGuard[str]:
    """Whether a filter value is a plain decimal number (ASCII digits: ``"²".isdigit()``)."""
    return value is not None and value.isascii() and value.isdigit()


class TaskNameFilter(admin.SimpleListFilter):
    title = "task"
    parameter_name = "name"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in distinct_task_names()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Task]) -> QuerySet[Task]:
        value = self.value()
        return queryset.filter(name=value) if value else queryset


class QueueFilter(admin.SimpleListFilter):
    title = "queue"
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        queues = known_queues()
        value = self.value()
        if value and value not in queues:
            queues.append(value)
        return [(queue, queue) for queue in queues]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Task]) -> QuerySet[Task]:
        value = self.value()
        return queryset.filter(queue=value) if value else queryset


class PriorityFilter(admin.SimpleListFilter):
    """Bands of priority: a named level and everything above it up to the next level."""

    title = "priority"
    parameter_name = "priority"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(level.value), level.name) for level in sorted(Priority, reverse=True)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Task]) -> QuerySet[Task]:
        value = self.value()
        if not is_number(value):
            return queryset
        low = int(value)
        higher = [level.value for level in Priority if level.value > low]
        queryset = queryset.filter(priority__gte=low)
        return queryset.filter(priority__lt=min(higher)) if higher else queryset


class PeriodicFilter(admin.SimpleListFilter):
    """The schedule that fired a task (the schedules table is small)."""

    title = "schedule"
    parameter_name = "periodic"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("none", "not periodic")] + [
            (str(periodic.pk), str(periodic)) for periodic in Periodic.objects.only("name", "key")
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Task]) -> QuerySet[Task]:
        value = self.value()
        if value == "none":
            return queryset.filter(periodic__isnull=True)
        if is_number(value):
            return queryset.filter(periodic_id=int(value))
        return queryset


class WorkerFilter(admin.SimpleListFilter):
    """The worker that holds (or last held) a task; listed from the live workers."""

    title = "worker"
    parameter_name = "worker"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        workers = [(str(worker.pk), str(worker)) for worker in Worker.objects.alive()]
        value = self.value()
        if value and value not in dict(workers):
            workers.append((value, value[:8]))
        return workers

    def queryset(self, request: HttpRequest, queryset: QuerySet[Task]) -> QuerySet[Task]:
        value = self.value()
        if not value:
            return queryset
        try:
            return queryset.filter(worker_id=uuid.UUID(value))
        except ValueError:
            return queryset.none()
