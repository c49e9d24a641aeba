"""Batches and chains in the admin: one page per structure, with its progress, its
members by state, its callbacks, and the two things staff do to it as a whole: cancel
what has not ended, retry what failed.

Batches are read-only: ``pq.batch`` and ``pq.chain`` write them; staff act on their
members through the actions, which need the task permissions they amount to
(``cancel_task``, ``retry_task``). Whoever may view tasks may view the batches they make.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from django_pq.admin import display, history
from django_pq.admin.filters import is_number
from django_pq.admin.liveness import with_worker_banner
from django_pq.admin.paginator import EstimatedCountPaginator
from django_pq.admin.params import refuse_nul_characters
from django_pq.admin.permissions import APP_LABEL, CANCEL_TASK, RETRY_TASK, has_pq_perm
from django_pq.dependencies import cancel_batch, retry_batch
from django_pq.models import FINISHED_STATUSES, Batch, Status, Task

if TYPE_CHECKING:
    BatchModelAdmin = admin.ModelAdmin[Batch]
else:
    BatchModelAdmin = admin.ModelAdmin

#: The states a member is counted by, in the order of a task's life.
COUNTED = (
    Status.BLOCKED,
    Status.PENDING,
    Status.RUNNING,
    Status.COMPLETED,
    Status.FAILED,
    Status.CANCELLED,
)
NOT_ENDED = (Status.BLOCKED, Status.PENDING, Status.RUNNING)
RETRYABLE = (Status.FAILED, Status.CANCELLED)

#: Members listed on a batch's page; the task list, filtered by the batch, has them all.
MEMBERS_SHOWN = 200

#: The field in the page's action forms that brings the browser back to the page.
FROM_PAGE = "_pq_batch_page"

#: When each callback runs.
CALLBACKS = {
    "on_success": "if every member completed",
    "on_failure": "if a member failed or was cancelled",
    "on_finish": "once every member ended, whatever they ended as",
}


def _tasks(count: int) -> str:
    return f"{count} task{'' if count == 1 else 's'}"


def member_counts(batches: Sequence[Batch]) -> dict[int, dict[str, int]]:
    """Each batch's members (its callbacks left out) by status: one GROUP BY query for all
    of ``batches``, through the (batch, status) index."""
    ids = [batch.pk for batch in batches]
    counts: dict[int, dict[str, int]] = {pk: {} for pk in ids}
    if not ids:
        return counts
    callbacks = [task_id for batch in batches for task_id in batch.callback_ids]
    members = Task.objects.using(batches[0]._state.db or "default").filter(batch_id__in=ids)
    if callbacks:
        members = members.exclude(pk__in=callbacks)
    rows = (
        members.order_by()
        .values("batch_id", "status")
        .annotate(n=Count("id"))
        .values_list("batch_id", "status", "n")
    )
    for batch_id, status, count in rows:
        counts[batch_id][status] = count
    return counts


def counts_of(batch: Batch) -> dict[str, int]:
    """The counts attached to ``batch`` by the list, or read now (its own page)."""
    cached: dict[str, int] | None = getattr(batch, "_pq_counts", None)
    if cached is None:
        cached = member_counts([batch])[batch.pk]
        batch._pq_counts = cached  # type: ignore[attr-defined]
    return cached


def progress_bar(counts: dict[str, int]) -> SafeString | str:
    """``<progress>`` and "5 of 7 ended"."""
    total = sum(counts.values())
    if not total:
        return "no members"
    ended = sum(counts.get(status, 0) for status in FINISHED_STATUSES)
    return format_html(
        '<progress class="pq-progress" max="{}" value="{}"></progress> {} of {} ended',
        total,
        ended,
        ended,
        total,
    )


def counts_summary(counts: dict[str, int]) -> SafeString | str:
    """The states that have members, as badges with their counts."""
    shown = [(status, counts[status]) for status in COUNTED if counts.get(status)]
    if not shown:
        return "-"
    return format_html_join(
        " ",
        "{} {}",
        ((count, status_badge(status)) for status, count in shown),
    )


def status_badge(status: str) -> SafeString:
    return display.status_badge(status, str(Status(status).label))


def task_link(task_id: int) -> str:
    return reverse("admin:django_pq_task_change", args=[task_id])


class BatchChangeList(ChangeList):
    """The batch list, with every row's member counts read in one query for the page."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        batches = list(self.result_list)  # evaluates (and caches) the page's rows
        counts = member_counts(batches)
        for batch in batches:
            batch._pq_counts = counts[batch.pk]


# -- actions ---------------------------------------------------------------------------


def _label(batches: list[Batch]) -> str:
    return str(batches[0]) if len(batches) == 1 else f"{len(batches)} batches and chains"


def _back_to_page(request: HttpRequest, batches: list[Batch]) -> HttpResponse | None:
    """From a batch's own page, back to it; from the list, Django's redirect to the list."""
    if FROM_PAGE in request.POST and len(batches) == 1:
        url = reverse("admin:django_pq_batch_change", args=[batches[0].pk])
        return HttpResponseRedirect(url)
    return None


def _changed_tasks(task_ids: list[int]) -> QuerySet[Task]:
    return Task.objects.filter(pk__in=task_ids).only("name", "status").order_by("pk")


@admin.action(
    description="Cancel the members of selected batches that have not ended",
    permissions=["cancel"],
)
def cancel_batches(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Batch]
) -> HttpResponse | None:
    """Blocked and pending members → cancelled; running ones are asked to stop. The
    callbacks then run by their conditions (on_failure and on_finish run)."""
    batches = list(queryset.order_by("pk"))
    cancelled = stopping = 0
    for batch in batches:
        changed = cancel_batch(batch.pk)
        if not changed:
            continue
        running = sum(status == Status.RUNNING for _, status in changed)
        cancelled += len(changed) - running
        stopping += running
        history.record(
            request,
            _changed_tasks([pk for pk, _ in changed]),
            f"Cancelled from the admin, with its {batch}.",
        )
        history.record(
            request, [batch], f"Cancelled its members from the admin ({_tasks(len(changed))})."
        )
    parts = []
    if cancelled:
        parts.append(f"Cancelled {_tasks(cancelled)}")
    if stopping:
        parts.append(f"asked workers to stop {_tasks(stopping)} running")
    if parts:
        text = "; ".join(parts)
        modeladmin.message_user(
            request, f"{text[0].upper()}{text[1:]} of {_label(batches)}.", messages.SUCCESS
        )
    else:
        modeladmin.message_user(
            request,
            f"Nothing to do: no member of {_label(batches)} is blocked, pending or running.",
            messages.WARNING,
        )
    return _back_to_page(request, batches)


@admin.action(
    description="Retry the failed and cancelled members of selected batches",
    permissions=["retry"],
)
def retry_batches(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Batch]
) -> HttpResponse | None:
    """failed/cancelled members → pending; what their ends cancelled waits again."""
    batches = list(queryset.order_by("pk"))
    retried = 0
    for batch in batches:
        changed = retry_batch(batch.pk)
        if not changed:
            continue
        retried += len(changed)
        history.record(
            request, _changed_tasks(changed), f"Retried from the admin, with its {batch}."
        )
        history.record(
            request, [batch], f"Retried its failed members from the admin ({_tasks(len(changed))})."
        )
    if retried:
        modeladmin.message_user(
            request, f"Retried {_tasks(retried)} of {_label(batches)}.", messages.SUCCESS
        )
    else:
        modeladmin.message_user(
            request,
            f"Nothing to do: no member of {_label(batches)} failed or was cancelled.",
            messages.WARNING,
        )
    return _back_to_page(request, batches)


# -- the admin -------------------------------------------------------------------------


@admin.register(Batch)
class BatchAdmin(BatchModelAdmin):
    """A batch's or chain's page: read-only numbers and members, two actions."""

    list_display = ["id", "kind", "created_at", "progress", "counts"]
    list_display_links = ["id", "kind"]
    list_filter = ["kind"]
    search_fields = ["id"]
    search_help_text = "A batch or chain id."
    sortable_by = ["id", "created_at"]
    ordering = ["-id"]
    list_per_page = 50
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    actions = [cancel_batches, retry_batches]
    change_form_template = "admin/django_pq/batch/change_form.html"
    fieldsets = [
        (None, {"fields": ["id", "kind", "created_at", "progress", "counts_table"]}),
        ("Callbacks", {"fields": ["on_success_link", "on_failure_link", "on_finish_link"]}),
        ("Members", {"fields": ["members_table"]}),
    ]
    readonly_fields = tuple(
        field for _, options in fieldsets for field in options["fields"] if isinstance(field, str)
    )

    class Media:
        css = {"all": ["django_pq/admin.css"]}

    # -- permissions: read-only rows; the actions need the task permissions ------------

    def has_view_permission(self, request: HttpRequest, obj: Batch | None = None) -> bool:
        # A batch is a view of its tasks: whoever may view tasks may view it.
        return super().has_view_permission(request, obj) or request.user.has_perm(
            f"{APP_LABEL}.view_task"
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Batch | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Batch | None = None) -> bool:
        return False

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return has_pq_perm(request, CANCEL_TASK)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return has_pq_perm(request, RETRY_TASK)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return BatchChangeList

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Batch], search_term: str
    ) -> tuple[QuerySet[Batch], bool]:
        term = search_term.strip().lstrip("#")
        if not term:
            return queryset, False
        if is_number(term):
            return queryset.filter(pk=int(term)), False
        return queryset.none(), False

    # -- columns and fields --------------------------------------------------------------

    @admin.display(description="progress")
    def progress(self, batch: Batch) -> SafeString | str:
        return progress_bar(counts_of(batch))

    @admin.display(description="members")
    def counts(self, batch: Batch) -> SafeString | str:
        return counts_summary(counts_of(batch))

    @admin.display(description="members by state")
    def counts_table(self, batch: Batch) -> SafeString:
        counts = counts_of(batch)
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td></tr>",
            ((status_badge(status), counts.get(status, 0)) for status in COUNTED),
        )
        return format_html('<table class="pq-batch-counts"><tbody>{}</tbody></table>', rows)

    def _callbacks(self, batch: Batch) -> dict[int, Task]:
        cached: dict[int, Task] | None = getattr(batch, "_pq_callbacks", None)
        if cached is None:
            found = Task.objects.filter(pk__in=batch.callback_ids).only(
                "name", "status", "error_code"
            )
            cached = batch._pq_callbacks = {task.pk: task for task in found}  # type: ignore[attr-defined]
        return cached

    def _callback_link(self, batch: Batch, field: str) -> SafeString | str:
        task_id = getattr(batch, f"{field}_id")
        if task_id is None:
            return "none"
        task = self._callbacks(batch).get(task_id)
        if task is None:
            return format_html("#{} (no longer stored)", task_id)
        return format_html(
            '<a href="{}">#{} {}</a> {} <span class="help">runs {}</span>',
            task_link(task.pk),
            task.pk,
            task.name,
            display.status_badge(task.status, task.get_status_display()),
            CALLBACKS[field],
        )

    @admin.display(description="on success")
    def on_success_link(self, batch: Batch) -> SafeString | str:
        return self._callback_link(batch, "on_success")

    @admin.display(description="on failure")
    def on_failure_link(self, batch: Batch) -> SafeString | str:
        return self._callback_link(batch, "on_failure")

    @admin.display(description="on finish")
    def on_finish_link(self, batch: Batch) -> SafeString | str:
        return self._callback_link(batch, "on_finish")

    @admin.display(description="members")
    def members_table(self, batch: Batch) -> SafeString | str:
        total = sum(counts_of(batch).values())
        if not total:
            return "No members (they may have been deleted)."
        members = Task.objects.filter(batch_id=batch.pk).order_by("pk")
        if batch.callback_ids:
            members = members.exclude(pk__in=batch.callback_ids)
        shown = list(members.only("name", "status", "error_code", "finished_at")[:MEMBERS_SHOWN])
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">#{}</a></td><td>{}</td><td>{}</td>'
            '<td><span title="{}">{}</span></td><td>{}</td></tr>',
            (
                (
                    task_link(task.pk),
                    task.pk,
                    task.name,
                    display.status_badge(task.status, task.get_status_display()),
                    task.get_error_code_display() if task.error_code else "",
                    task.error_code,
                    display.moment(task.finished_at) if task.finished_at else "",
                )
                for task in shown
            ),
        )
        table = format_html(
            '<table class="pq-batch-members"><thead><tr><th>task</th><th>name</th>'
            "<th>status</th><th>error code</th><th>ended</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            rows,
        )
        if total <= len(shown):
            return table
        url = reverse("admin:django_pq_task_changelist")
        return format_html(
            '{}<p class="help pq-batch-capped">The first {} of {} members. '
            '<a href="{}?batch={}">All of them in the task list</a> (callbacks included).</p>',
            table,
            len(shown),
            total,
            url,
            batch.pk,
        )

    # -- pages ---------------------------------------------------------------------------

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        refuse_nul_characters(request)
        return super().changelist_view(request, extra_context)

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Batch | None:
        # The page's actions and its fields read the same row and counts: once per request.
        cached: Batch | None = getattr(request, "_pq_batch", None)
        if cached is not None and from_field is None and str(cached.pk) == object_id:
            return cached
        return super().get_object(request, object_id, from_field)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = with_worker_banner(extra_context)
        batch = self.get_object(request, object_id)
        if batch is not None:
            setattr(request, "_pq_batch", batch)  # noqa: B010 - not an attribute of the type
            context["pq_batch_actions"] = self.object_actions(request, batch)
            context["pq_from_page"] = FROM_PAGE
        return super().change_view(request, object_id, form_url, context)

    def object_actions(self, request: HttpRequest, batch: Batch) -> list[tuple[str, str, str]]:
        """The (action name, button label, what it does) that fit this batch and user."""
        counts = counts_of(batch)
        fitting = []
        if any(counts.get(status) for status in NOT_ENDED):
            fitting.append(
                (
                    "cancel_batches",
                    f"Cancel {batch.kind}",
                    "Cancels its blocked and pending members and stops its running ones; "
                    "its callbacks then run by their conditions.",
                    self.has_cancel_permission(request),
                )
            )
        if any(counts.get(status) for status in RETRYABLE):
            fitting.append(
                (
                    "retry_batches",
                    "Retry failed members",
                    "Puts its failed and cancelled members back to pending; what their ends "
                    "cancelled waits again.",
                    self.has_retry_permission(request),
                )
            )
        return [(name, label, title) for name, label, title, allowed in fitting if allowed]


__all__ = ["BatchAdmin"]
