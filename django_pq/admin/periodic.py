"""The schedule pages: a changelist that reads like a timetable, the form, and the actions."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from django.contrib import admin
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from django_pq.admin import display
from django_pq.admin.bases import PeriodicModelAdmin
from django_pq.admin.liveness import with_worker_banner
from django_pq.admin.params import refuse_nul_characters
from django_pq.admin.periodic_actions import pause_schedules, resume_schedules, run_schedules_now
from django_pq.admin.periodic_form import (
    CRON,
    OPTION_FIELDS,
    PeriodicForm,
    checked_runs,
    interval_from,
)
from django_pq.admin.permissions import PAUSE_PERIODIC, RUN_PERIODIC_NOW, has_pq_perm
from django_pq.conf import pq_settings
from django_pq.exceptions import InvalidSchedule
from django_pq.models import Periodic, Status, Task
from django_pq.store.schedules import database_now, notify_schedules_changed
from django_pq.timing import validate_cron, validate_timezone

#: Run times shown in the preview.
PREVIEW_COUNT = 5


def upcoming_runs(
    *, run_every: dt.timedelta | None, cron: str | None, tz: str, count: int = PREVIEW_COUNT
) -> list[dt.datetime]:
    """The next ``count`` run times of a timing saved now, in its time zone."""
    return checked_runs(run_every=run_every, cron=cron, tz=tz, after=timezone.now(), count=count)


def scheduled_runs(periodic: Periodic, count: int = PREVIEW_COUNT) -> list[dt.datetime]:
    """A saved schedule's next ``count`` runs: its ``next_run`` and the slots after it.

    Raises InvalidSchedule for a row no worker could fire (written without the form's
    validation: an unknown time zone, a cron that never fires), so its page says why.
    """
    try:
        zone = ZoneInfo(periodic.timezone)
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        raise InvalidSchedule(f"Unknown time zone {periodic.timezone!r}.") from None
    later = checked_runs(
        run_every=periodic.run_every,
        cron=periodic.cron,
        tz=periodic.timezone,
        after=periodic.next_run,
        count=count - 1,
    )
    return [periodic.next_run.astimezone(zone), *later]


def _when(moment: dt.datetime) -> str:
    return f"{moment:%a %Y-%m-%d %H:%M %Z}"


@admin.register(Periodic)
class PeriodicAdmin(PeriodicModelAdmin):
    """Schedules made in the admin are edited here; declared ones (from code) are read-only."""

    form = PeriodicForm
    list_display = [
        "__str__",
        "schedule",
        "active",
        "error",
        "next_run_text",
        "last_run_status",
        "skipped_runs",
        "queue",
        "runs_link",
    ]
    list_filter = ["active", "is_declared", "queue"]
    search_fields = ["name", "key"]
    actions = [pause_schedules, resume_schedules, run_schedules_now]
    change_list_template = "admin/django_pq/periodic/change_list.html"
    change_form_template = "admin/django_pq/periodic/change_form.html"
    readonly_fields = [
        "error",
        "schedule",
        "next_run_text",
        "last_run_status",
        "skipped_runs",
        "runs_link",
        "upcoming",
        "is_declared",
    ]
    fieldsets = [
        ("Task", {"fields": ["task", "key", "args", "kwargs"]}),
        (
            "When",
            {"fields": ["timing", ("every", "unit"), "cron", "timezone", "active"]},
        ),
        (
            "Options",
            {"fields": OPTION_FIELDS},
        ),
    ]
    status_fieldset = (
        "Status",
        {
            "fields": [
                "error",
                "schedule",
                "upcoming",
                "next_run_text",
                "last_run_status",
                "skipped_runs",
                "runs_link",
                "is_declared",
            ]
        },
    )

    class Media:
        css = {"all": ["django_pq/admin.css"]}
        js = ["django_pq/periodic_preview.js"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Periodic]:
        # The latest run, through the (periodic, slot) unique index read backwards.
        latest = Task.objects.filter(periodic=OuterRef("pk")).order_by("-slot")
        return (
            super()
            .get_queryset(request)
            # Read only where it is shown: a value nested deeper than Python's parser goes
            # must not stop the list.
            .defer("payload")
            .annotate(
                latest_run_id=Subquery(latest.values("id")[:1]),
                latest_run_status=Subquery(latest.values("status")[:1]),
            )
        )

    def get_fieldsets(self, request: HttpRequest, obj: Periodic | None = None) -> Any:
        if obj is None:
            return self.fieldsets
        if not self.has_change_permission(request, obj):
            return [
                self.status_fieldset,
                (
                    "Definition",
                    {
                        "fields": [
                            "name",
                            "key",
                            "arguments",
                            "run_every",
                            "cron",
                            "timezone",
                            "active",
                            *OPTION_FIELDS,
                        ]
                    },
                ),
            ]
        title, options = self.status_fieldset
        # The editable form has its own live preview of the next runs.
        fields = [field for field in options["fields"] if field != "upcoming"]
        return [*self.fieldsets, (title, {**options, "fields": fields})]

    # -- permissions ---------------------------------------------------------------------

    def has_change_permission(self, request: HttpRequest, obj: Periodic | None = None) -> bool:
        # Declared schedules are rewritten from code on every deploy: edit them there.
        if obj is not None and obj.is_declared:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Periodic | None = None) -> bool:
        if obj is not None and obj.is_declared:
            return False
        return super().has_delete_permission(request, obj)

    def has_pause_permission(self, request: HttpRequest) -> bool:
        return has_pq_perm(request, PAUSE_PERIODIC)

    def has_run_now_permission(self, request: HttpRequest) -> bool:
        return has_pq_perm(request, RUN_PERIODIC_NOW)

    # -- columns and fields --------------------------------------------------------------

    @admin.display(description="schedule")
    def schedule(self, periodic: Periodic) -> str:
        try:
            return periodic.description
        except (ValueError, TypeError):
            # A cron written to the table without validation: show it as it is stored.
            return f"cron {periodic.cron!r} (not valid)"

    @admin.display(description="next run", ordering="next_run")
    def next_run_text(self, periodic: Periodic) -> str:
        # A paused schedule keeps its next_run for resuming, but it will not run then.
        return display.moment(periodic.next_run) if periodic.active else "paused"

    @admin.display(description="last run", ordering="last_run")
    def last_run_status(self, periodic: Periodic) -> SafeString | str:
        status = getattr(periodic, "latest_run_status", None)
        run_id = getattr(periodic, "latest_run_id", None)
        if periodic.last_run is None and run_id is None:
            return "never"
        when = display.moment(periodic.last_run) if periodic.last_run else ""
        if run_id is None or status is None:
            return when
        url = reverse("admin:django_pq_task_change", args=[run_id])
        return format_html(
            '{} <a href="{}">{}</a>',
            when,
            url,
            display.status_badge(status, str(Status(status).label)),
        )

    @admin.display(description="arguments")
    def arguments(self, periodic: Periodic) -> SafeString:
        return display.preformatted(display.stored_json(periodic, "payload", display.readable_call))

    @admin.display(description="runs")
    def runs_link(self, periodic: Periodic) -> SafeString:
        url = reverse("admin:django_pq_task_changelist")
        return format_html('<a href="{}?periodic={}">runs</a>', url, periodic.pk)

    @admin.display(description="next five runs")
    def upcoming(self, periodic: Periodic) -> SafeString | str:
        if not periodic.active:
            return "paused"
        try:
            runs = scheduled_runs(periodic)
        except InvalidSchedule as error:
            return str(error)
        return format_html(
            '<ul class="pq-preview">{}</ul>',
            format_html_join("", "<li>{}</li>", ((_when(run),) for run in runs)),
        )

    # -- saving --------------------------------------------------------------------------

    def save_model(self, request: HttpRequest, obj: Periodic, form: Any, change: bool) -> None:
        """Save, moving ``next_run`` when the timing changed, and wake the workers' timers."""
        now = database_now(pq_settings.DATABASE)
        if form.is_retimed and obj.active:
            obj.next_run = obj.first_slot_after(now)
        if obj.active:
            obj.error = ""  # saved active again: a worker's old complaint no longer holds
        obj.updated_at = now
        super().save_model(request, obj, form, change)
        notify_schedules_changed(pq_settings.DATABASE)

    # -- pages ---------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        preview = path(
            "preview/",
            self.admin_site.admin_view(self.preview_view),
            name="django_pq_periodic_preview",
        )
        return [preview, *super().get_urls()]

    def preview_view(self, request: HttpRequest) -> JsonResponse:
        """The next five run times for the timing in the query string (reads nothing)."""
        if not self.has_view_permission(request):
            return JsonResponse({"error": "permission denied"}, status=403)
        data = request.GET
        try:
            tz = validate_timezone(data.get("timezone") or "UTC")
            if data.get("timing") == CRON:
                run_every, cron = None, validate_cron(data.get("cron") or "")
            else:
                run_every, cron = interval_from(data.get("every"), data.get("unit")), None
            runs = upcoming_runs(run_every=run_every, cron=cron, tz=tz)
        except InvalidSchedule as error:
            return JsonResponse({"error": str(error)})
        return JsonResponse({"runs": [_when(run) for run in runs]})

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        refuse_nul_characters(request)
        return super().changelist_view(request, with_worker_banner(extra_context))

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = with_worker_banner(extra_context)
        context["pq_preview_url"] = reverse("admin:django_pq_periodic_preview")
        periodic = self.get_object(request, object_id) if object_id else None
        if periodic is not None and periodic.active:
            try:
                context["pq_preview_runs"] = [_when(run) for run in scheduled_runs(periodic)]
            except InvalidSchedule as error:
                context["pq_preview_error"] = str(error)
        return super().changeform_view(request, object_id, form_url, context)
