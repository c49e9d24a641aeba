"""The overview page: what is waiting, running and failing, at a glance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince

from django_pq import dashboard
from django_pq.admin.chart import throughput_svg
from django_pq.admin.display import human_duration
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
            # The banner from the same snapshot as the numbers, so the page agrees with itself.
            "pq_no_live_worker": not numbers.snapshot.has_live_worker,
        }
        request.current_app = model_admin.admin_site.name
        return TemplateResponse(request, "admin/django_pq/overview.html", context)

    return view


def list_overview_in_app_list(site: AdminSite) -> None:
    """Show the overview as the first row of django-pq's app on ``site``'s index pages.

    The admin index, the app index and the navigation sidebar list registered models only;
    the overview is a page of the task admin, so it is added to django-pq's app entry, for
    users who see the task list. Done once per site, whichever admin site registers
    :class:`~django_pq.admin.TaskAdmin`.
    """
    if getattr(site, "pq_lists_overview", False):
        return
    models_only = site.get_app_list

    def get_app_list(request: HttpRequest, app_label: str | None = None) -> list[Any]:
        app_list: list[dict[str, Any]] = models_only(request, app_label)
        for app in app_list:
            if app["app_label"] == Task._meta.app_label and any(
                model["object_name"] == Task._meta.object_name for model in app["models"]
            ):
                url = reverse(f"{site.name}:django_pq_overview", current_app=site.name)
                app["models"].insert(0, _overview_row(url))
        return app_list

    setattr(site, "get_app_list", get_app_list)  # noqa: B010 (a method mypy will not let be assigned)
    setattr(site, "pq_lists_overview", True)  # noqa: B010


def _overview_row(url: str) -> dict[str, Any]:
    # The keys of a model row in AdminSite._build_app_dict, read by admin/app_list.html.
    return {
        "name": "Overview",
        "object_name": "Overview",
        "perms": {"add": False, "change": False, "delete": False, "view": True},
        "admin_url": url,
        "add_url": None,
        "view_only": True,
    }
