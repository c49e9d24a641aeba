"""The schedule changelist's actions: pause, resume, run now."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from django_pq.admin import history
from django_pq.exceptions import InvalidSchedule
from django_pq.models import Periodic


def _schedules(count: int) -> str:
    return f"{count} schedule{'' if count == 1 else 's'}"


@admin.action(description="Pause selected schedules", permissions=["pause"])
def pause_schedules(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Periodic]
) -> None:
    """Stop the active ones firing; their rows, history and runs stay."""
    _set_active(modeladmin, request, queryset, active=False)


@admin.action(description="Resume selected schedules", permissions=["pause"])
def resume_schedules(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Periodic]
) -> None:
    """Let the paused ones fire again from their next slot after now."""
    _set_active(modeladmin, request, queryset, active=True)


def _set_active(
    modeladmin: admin.ModelAdmin[Any],
    request: HttpRequest,
    queryset: QuerySet[Periodic],
    *,
    active: bool,
) -> None:
    selected = list(queryset)
    changing = [periodic for periodic in selected if periodic.active != active]
    for periodic in list(changing):
        try:
            if active:
                periodic.resume()
            else:
                periodic.pause()
        except InvalidSchedule as error:  # its timing still has no next slot
            modeladmin.message_user(request, str(error), messages.ERROR)
            changing.remove(periodic)
    verb, already = ("Resumed", "already active") if active else ("Paused", "already paused")
    history.record(request, changing, f"{verb} from the admin.")
    text = f"{verb} {_schedules(len(changing))}"
    if len(selected) > len(changing):
        text += f"; {_schedules(len(selected) - len(changing))} {already}"
    modeladmin.message_user(request, f"{text}.", messages.SUCCESS if changing else messages.WARNING)


@admin.action(description="Run selected schedules now", permissions=["run_now"])
def run_schedules_now(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Periodic]
) -> None:
    """Fire one run of each now, leaving ``next_run`` alone and respecting max_concurrent."""
    fired: list[Periodic] = []
    skipped = 0
    for periodic in queryset:
        if periodic.run_now() is None:
            skipped += 1
        else:
            fired.append(periodic)
    history.record(request, fired, "Run started from the admin.")
    text = f"Started {len(fired)} run{'' if len(fired) == 1 else 's'}"
    if skipped:
        text += (
            f"; {_schedules(skipped)} skipped because max_concurrent runs are still "
            "pending or running"
        )
    modeladmin.message_user(request, f"{text}.", messages.SUCCESS if fired else messages.WARNING)
