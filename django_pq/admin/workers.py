"""The workers page: who is alive, what each one serves, and what it is running."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import admin
from django.db.models import (
    BooleanField,
    Count,
    ExpressionWrapper,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Coalesce, Now
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from django_pq.admin.bases import WorkerModelAdmin
from django_pq.admin.params import refuse_nul_characters
from django_pq.models import Status, Task, Worker, holds_a_lease

#: Dead workers stay on the page this long after their last heartbeat.
RECENTLY_DEAD = dt.timedelta(hours=24)


class AliveFilter(admin.SimpleListFilter):
    title = "alive"
    parameter_name = "alive"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "alive"), ("no", "stopped or lost")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Worker]) -> QuerySet[Worker]:
        alive = holds_a_lease()
        if self.value() == "yes":
            return queryset.filter(alive)
        if self.value() == "no":
            return queryset.exclude(alive)
        return queryset


def _listed(values: Any) -> str:
    """A JSON list column as text; any other JSON value (a hand-written row) as it is."""
    return ", ".join(map(str, values)) if isinstance(values, list) else str(values)


@admin.register(Worker)
class WorkerAdmin(WorkerModelAdmin):
    """Read-only: rows are written by the workers themselves."""

    list_display = [
        "__str__",
        "alive",
        "queue_list",
        "priority_list",
        "concurrency",
        "running_tasks",
        "started_at",
        "heartbeat_at",
        "stopped_at",
        "version",
    ]
    list_filter = [AliveFilter, "hostname"]
    search_fields = ["hostname"]
    readonly_fields = (
        "id",
        "hostname",
        "pid",
        "alive",
        "queue_list",
        "priority_list",
        "min_priority",
        "concurrency",
        "running_tasks",
        "started_at",
        "heartbeat_at",
        "lease_expires_at",
        "stopped_at",
        "version",
    )
    fields = readonly_fields

    class Media:
        css = {"all": ["django_pq/admin.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Worker]:
        running = (
            Task.objects.filter(status=Status.RUNNING, worker_id=OuterRef("pk"))
            .order_by()
            .values("worker_id")
            .annotate(count=Count("*"))
            .values("count")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                is_alive=ExpressionWrapper(
                    holds_a_lease(),
                    output_field=BooleanField(),
                ),
                running_count=Coalesce(Subquery(running, output_field=IntegerField()), 0),
            )
            .filter(Q(is_alive=True) | Q(heartbeat_at__gte=Now() - RECENTLY_DEAD))
        )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        refuse_nul_characters(request)
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Worker | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Worker | None = None) -> bool:
        return False

    @admin.display(description="alive", boolean=True, ordering="is_alive")
    def alive(self, worker: Worker) -> bool:
        return bool(getattr(worker, "is_alive", False))

    @admin.display(description="queues")
    def queue_list(self, worker: Worker) -> str:
        return _listed(worker.queues) or "all"

    @admin.display(description="priorities")
    def priority_list(self, worker: Worker) -> str:
        if worker.priorities:
            return _listed(worker.priorities)
        if worker.min_priority is not None:
            return f">= {worker.min_priority}"
        return "all"

    @admin.display(description="running tasks", ordering="running_count")
    def running_tasks(self, worker: Worker) -> SafeString | str:
        count = int(getattr(worker, "running_count", 0))
        if not count:
            return "0"
        url = reverse("admin:django_pq_task_changelist")
        return format_html(
            '<a href="{}?status__exact=running&amp;worker={}">{}</a>', url, worker.pk, count
        )
