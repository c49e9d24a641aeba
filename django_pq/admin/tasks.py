"""The task pages: a fast changelist, a read-only detail page, and the task actions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from django_pq.admin import display
from django_pq.admin.bases import TaskModelAdmin
from django_pq.admin.filters import (
    PeriodicFilter,
    PriorityFilter,
    QueueFilter,
    TaskNameFilter,
    WorkerFilter,
    is_number,
)
from django_pq.admin.liveness import with_worker_banner
from django_pq.admin.overview import list_overview_in_app_list, overview_view
from django_pq.admin.paginator import EstimatedCountPaginator
from django_pq.admin.params import refuse_nul_characters
from django_pq.admin.permissions import (
    CANCEL_TASK,
    DELETE_TASK,
    RETRY_TASK,
    RUN_TASK_NOW,
    has_pq_perm,
)
from django_pq.admin.task_actions import (
    cancel_tasks,
    delete_finished_tasks,
    retry_tasks,
    run_tasks_now,
)
from django_pq.models import Batch, Dependency, Periodic, Status, Task
from django_pq.status import progress_fraction

#: Runs of the same schedule shown on a periodic task's page.
HISTORY_LENGTH = 10

#: Tasks listed on a task's page under "waits for" and "waited for by", each.
DEPENDENCIES_SHOWN = 50

#: The JSON columns: read only on a task's page, where they are shown. The list never shows
#: them, and one value nested deeper than Python's parser goes must not stop the list.
JSON_FIELDS = (
    "payload",
    "result",
    "requeue",
    "retry_policy",
    "failure_counts",
    "retry_decision",
    "progress",
)


def _json_block(
    task: Task, field: str, render: Callable[[Any], str], empty: str = "-"
) -> SafeString | str:
    """A JSON column of ``task`` rendered for its page, or ``empty`` when it holds nothing."""
    text = display.stored_json(task, field, render)
    return display.preformatted(text) if text else empty


class BatchFilter(admin.SimpleListFilter):
    """The batch or chain a task belongs to (a member or a callback); reached from a
    batch's page, so it lists only the batch it was given."""

    title = "batch or chain"
    parameter_name = "batch"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        value = self.value()
        return [(value, f"#{value}")] if is_number(value) else []

    def queryset(self, request: HttpRequest, queryset: QuerySet[Task]) -> QuerySet[Task]:
        value = self.value()
        return queryset.filter(batch_id=int(value)) if is_number(value) else queryset


def _dependencies_shown(found: Any, other: str, none: str) -> SafeString | str:
    """The first DEPENDENCIES_SHOWN of ``found`` (Dependency rows), each as the task at
    its ``other`` end, with "and N more" (counted only when there are more)."""
    rows = list(
        found.order_by(f"{other}_id").values_list(
            f"{other}_id", f"{other}__name", f"{other}__status", "satisfied"
        )[: DEPENDENCIES_SHOWN + 1]
    )
    if not rows:
        return none
    more = found.count() - DEPENDENCIES_SHOWN if len(rows) > DEPENDENCIES_SHOWN else 0
    return _dependency_list(rows[:DEPENDENCIES_SHOWN], more)


def _dependency_list(rows: list[tuple[int, str, str, bool]], more: int) -> SafeString:
    """Linked tasks with their status and whether the dependency is satisfied."""
    items = format_html_join(
        "",
        '<li><a href="{}">#{} {}</a> {} {}</li>',
        (
            (
                reverse("admin:django_pq_task_change", args=[task_id]),
                task_id,
                name,
                display.status_badge(status, str(Status(status).label)),
                "satisfied" if is_satisfied else "not satisfied yet",
            )
            for task_id, name, status, is_satisfied in rows
        ),
    )
    tail = format_html("<li>and {} more</li>", more) if more > 0 else ""
    return format_html('<ul class="pq-history pq-dependencies">{}{}</ul>', items, tail)


@admin.register(Task)
class TaskAdmin(TaskModelAdmin):
    """Tasks are read-only: their name, arguments and status change only through actions."""

    list_display = [
        "id",
        "name",
        "status_badge",
        "queue",
        "priority_label",
        "run_at",
        "attempts_of_max",
        "progress_short",
        "duration",
        "worker_short",
    ]
    list_display_links = ["id", "name"]
    list_filter = [
        "status",
        QueueFilter,
        PriorityFilter,
        TaskNameFilter,
        PeriodicFilter,
        WorkerFilter,
        BatchFilter,
        ("run_at", admin.DateFieldListFilter),
        ("created_at", admin.DateFieldListFilter),
        ("finished_at", admin.DateFieldListFilter),
    ]
    search_fields = ["name", "client_id"]
    search_help_text = "A task id, a client_id, or part of a task name."
    # Sorting by other columns would sort the whole table; the id order is an index scan.
    sortable_by = ["id"]
    ordering = ["-id"]
    list_per_page = 50
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    actions = [retry_tasks, cancel_tasks, run_tasks_now, delete_finished_tasks]
    change_list_template = "admin/django_pq/task/change_list.html"
    change_form_template = "admin/django_pq/task/change_form.html"
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "name",
                    "status_badge",
                    "queue",
                    "priority_label",
                    "client_id",
                    "periodic_link",
                    "slot",
                ]
            },
        ),
        ("Arguments and result", {"fields": ["arguments", "result_text", "parked_version"]}),
        ("Progress", {"fields": ["progress_text"]}),
        (
            "Dependencies",
            {"fields": ["batch_link", "waits_for", "waited_for_by", "run_if_text"]},
        ),
        ("Error", {"fields": ["error_code", "error_text"]}),
        (
            "Retries",
            {"fields": ["retry_decision_text", "failure_counts_text", "retry_policy_text"]},
        ),
        (
            "Timings",
            {
                "fields": [
                    "created_at",
                    "run_at",
                    "started_at",
                    "finished_at",
                    "duration",
                    "attempts_of_max",
                    "max_runtime_text",
                    "soft_runtime_text",
                ]
            },
        ),
        ("Resources", {"fields": ["peak_memory", "cpu_time", "worker_link", "run_token"]}),
        ("History", {"fields": ["schedule_history"]}),
    ]
    readonly_fields = tuple(
        field for _, options in fieldsets for field in options["fields"] if isinstance(field, str)
    )

    class Media:
        css = {"all": ["django_pq/admin.css"]}

    def __init__(self, model: type[Task], admin_site: admin.AdminSite) -> None:
        super().__init__(model, admin_site)
        list_overview_in_app_list(admin_site)

    # -- permissions: read-only rows, one permission per action --------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Task | None = None) -> bool:
        # A task's name, payload and status change only through the actions.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Task | None = None) -> bool:
        if obj is not None and not obj.is_finished:
            return False
        return has_pq_perm(request, DELETE_TASK)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return has_pq_perm(request, RETRY_TASK)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return has_pq_perm(request, CANCEL_TASK)

    def has_run_now_permission(self, request: HttpRequest) -> bool:
        return has_pq_perm(request, RUN_TASK_NOW)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Task]:
        # The list shows progress from two keys read by the database, never the whole
        # JSON value (which a row may nest deeper than Python can decode).
        return (
            super()
            .get_queryset(request)
            .defer(*JSON_FIELDS)
            .annotate(
                progress_done=KeyTextTransform("done", "progress"),
                progress_total=KeyTextTransform("total", "progress"),
            )
        )

    # -- search: the id and client_id through their unique indexes -----------------------

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Task], search_term: str
    ) -> tuple[QuerySet[Task], bool]:
        term = search_term.strip().lstrip("#")
        if is_number(term):
            return queryset.filter(Q(pk=int(term)) | Q(client_id=term)), False
        if not term:
            return queryset, False
        by_client_id = queryset.filter(client_id=term)
        by_name = queryset.filter(name__icontains=term)
        return by_client_id | by_name, False

    # -- columns and fields --------------------------------------------------------------

    @admin.display(description="status", ordering="status")
    def status_badge(self, task: Task) -> SafeString:
        return display.status_badge(task.status, task.get_status_display())

    @admin.display(description="priority")
    def priority_label(self, task: Task) -> str:
        return task.priority_label

    @admin.display(description="attempts")
    def attempts_of_max(self, task: Task) -> str:
        return f"{task.attempts}/{task.max_attempts}"

    @admin.display(description="duration")
    def duration(self, task: Task) -> str:
        return display.human_duration(display.between(task.started_at, task.finished_at))

    @admin.display(description="worker")
    def worker_short(self, task: Task) -> str:
        return str(task.worker_id)[:8] if task.worker_id else "-"

    @admin.display(description="worker")
    def worker_link(self, task: Task) -> SafeString | str:
        if task.worker_id is None:
            return "-"
        url = reverse("admin:django_pq_worker_change", args=[task.worker_id])
        return format_html('<a href="{}">{}</a>', url, task.worker_id)

    @admin.display(description="schedule")
    def periodic_link(self, task: Task) -> SafeString | str:
        if task.periodic_id is None:
            return "-"
        url = reverse("admin:django_pq_periodic_change", args=[task.periodic_id])
        # Only what the link shows: the schedule's payload is not needed (nor always readable).
        periodic = Periodic.objects.only("name", "key").filter(pk=task.periodic_id).first()
        return format_html('<a href="{}">{}</a>', url, periodic or task.periodic_id)

    @admin.display(description="batch or chain")
    def batch_link(self, task: Task) -> SafeString | str:
        if task.batch_id is None:
            return "-"
        batch = (
            Batch.objects.filter(pk=task.batch_id)
            .only("kind", "on_success_id", "on_failure_id", "on_finish_id")
            .first()
        )
        if batch is None:
            return f"#{task.batch_id} (no longer stored)"
        role = "member"
        for callback in ("on_success", "on_failure", "on_finish"):
            if getattr(batch, f"{callback}_id") == task.pk:
                role = f"its {callback} callback"
        url = reverse("admin:django_pq_batch_change", args=[batch.pk])
        return format_html('<a href="{}">{}</a> ({})', url, batch, role)

    @admin.display(description="waits for")
    def waits_for(self, task: Task) -> SafeString | str:
        found = Dependency.objects.filter(task_id=task.pk)
        return _dependencies_shown(found, "depends_on", "No task: it runs when its turn comes.")

    @admin.display(description="waited for by")
    def waited_for_by(self, task: Task) -> SafeString | str:
        found = Dependency.objects.filter(depends_on_id=task.pk)
        return _dependencies_shown(found, "task", "No task.")

    @admin.display(description="runs if")
    def run_if_text(self, task: Task) -> str:
        if task.run_if:
            return str(task.get_run_if_display())
        return "every task it waits for completed (the default; cancelled if one fails)"

    @admin.display(description="arguments")
    def arguments(self, task: Task) -> SafeString:
        return display.preformatted(display.stored_json(task, "payload", display.readable_call))

    @admin.display(description="result")
    def result_text(self, task: Task) -> SafeString:
        return display.preformatted(display.stored_json(task, "result", display.readable_value))

    @admin.display(description="version parked by upsert")
    def parked_version(self, task: Task) -> SafeString | str:
        text = display.stored_json(
            task, "requeue", lambda parked: "" if parked is None else display.readable_json(parked)
        )
        return display.preformatted(text) if text else "-"

    @admin.display(description="error and traceback")
    def error_text(self, task: Task) -> SafeString | str:
        return display.preformatted(task.error) if task.error else "-"

    @admin.display(description="progress")
    def progress_short(self, task: Task) -> str:
        return progress_fraction(
            getattr(task, "progress_done", None), getattr(task, "progress_total", None)
        )

    @admin.display(description="progress")
    def progress_text(self, task: Task) -> SafeString | str:
        return _json_block(task, "progress", display.readable_progress)

    @admin.display(description="last failure judged")
    def retry_decision_text(self, task: Task) -> SafeString | str:
        return _json_block(task, "retry_decision", display.readable_decision)

    @admin.display(description="failures by error code")
    def failure_counts_text(self, task: Task) -> SafeString | str:
        return _json_block(task, "failure_counts", display.readable_optional_json)

    @admin.display(description="retry policy")
    def retry_policy_text(self, task: Task) -> SafeString | str:
        return _json_block(
            task,
            "retry_policy",
            display.readable_optional_json,
            empty="none: the worker's retries (PQ_RETRY_DELAY)",
        )

    @admin.display(description="max runtime")
    def max_runtime_text(self, task: Task) -> str:
        return display.human_duration(task.max_runtime) if task.max_runtime else "no limit"

    @admin.display(description="soft runtime")
    def soft_runtime_text(self, task: Task) -> str:
        return display.human_duration(task.soft_runtime) if task.soft_runtime else "none"

    @admin.display(description="peak memory (RSS)")
    def peak_memory(self, task: Task) -> str:
        return display.human_bytes(task.peak_rss)

    @admin.display(description="CPU time")
    def cpu_time(self, task: Task) -> str:
        return display.human_duration(task.cpu_seconds)

    @admin.display(description="recent runs of its schedule")
    def schedule_history(self, task: Task) -> SafeString | str:
        if task.periodic_id is None:
            return "Not fired by a schedule; a retry reuses this row, so its attempts count it."
        runs = Task.objects.filter(periodic_id=task.periodic_id).order_by("-slot", "-id")
        rows = format_html_join(
            "",
            '<li><a href="{}">#{}</a> {} {} {}</li>',
            (
                (
                    reverse("admin:django_pq_task_change", args=[run.pk]),
                    run.pk,
                    run.slot or run.run_at,
                    display.status_badge(run.status, run.get_status_display()),
                    run.get_error_code_display() if run.error_code else "",
                )
                for run in runs[:HISTORY_LENGTH]
            ),
        )
        return format_html('<ul class="pq-history">{}</ul>', rows)

    # -- pages ---------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        overview = path(
            "overview/",
            self.admin_site.admin_view(overview_view(self)),
            name="django_pq_overview",
        )
        return [overview, *super().get_urls()]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        refuse_nul_characters(request)
        return super().changelist_view(request, with_worker_banner(extra_context))

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = with_worker_banner(extra_context)
        task = self.get_object(request, object_id)
        if task is not None:
            context["pq_task_actions"] = self.object_actions(request, task)
        return super().change_view(request, object_id, form_url, context)

    def object_actions(self, request: HttpRequest, task: Task) -> list[tuple[str, str]]:
        """The (action name, button label) pairs that fit this task and this user."""
        fitting = []
        if task.status in (Status.FAILED, Status.CANCELLED):
            fitting.append(("retry_tasks", "Retry", self.has_retry_permission(request)))
        if task.status in (Status.PENDING, Status.RUNNING):
            fitting.append(("cancel_tasks", "Cancel", self.has_cancel_permission(request)))
        if task.status == Status.PENDING and task.run_at > timezone.now():
            fitting.append(("run_tasks_now", "Run now", self.has_run_now_permission(request)))
        return [(name, label) for name, label, allowed in fitting if allowed]
