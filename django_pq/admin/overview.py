"""The overview page: what is waiting, running and failing, at a glance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.timesince import timesince

from django_pq import dashboard
from django_pq.admin.chart import throughput_svg
from django_pq.admin.display import human_duration
from django_pq.admin.liveness import with_worker_banner
from django_pq.models import Task


def overview_view(model_admin: admin.ModelAdmin[Task]) -> Callable[[HttpRequest], HttpResponse]:
    """The overview view, for staff who may view tasks. It only reads."""

    def view(request: HttpRequest) -> HttpResponse:
        if not model_admin.has_view_permission(request):
            raise PermissionDenied
        numbers = dashboard.overview()
        age = numbers.oldest_ready_age
        context: dict[str, Any] = {
            **model_admin.admin_site.each_context(request),
            "title": "Task queue overview",
            "opts": Task._meta,
            "app_label": Task._meta.app_label,
            "overview": numbers,
            "recent": timesince(timezone.now() - dashboard.RECENT, timezone.now()),
            "oldest_ready_age": None if age is None else human_duration(age.total_seconds()),
            "chart": throughput_svg(numbers.throughput),
            "chart_completed": sum(minute.completed for minute in numbers.throughput),
            "chart_failed": sum(minute.failed for minute in numbers.throughput),
        }
        request.current_app = model_admin.admin_site.name
        return TemplateResponse(
            request, "admin/django_pq/overview.html", with_worker_banner(context)
        )

    return view
