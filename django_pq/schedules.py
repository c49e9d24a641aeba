"""Periodic schedules: the API to create, pause, resume, fire and remove them.

A schedule never runs code itself. When a slot is due, a worker inserts a ``pq_tasks`` row
for it (see ``django_pq.worker.firing``), so every periodic run has history, a result,
errors, retries and admin actions like any task. Missed slots (workers down, schedule
paused) coalesce into one run. The slots themselves, and the validation of intervals, cron
expressions and time zones, are :mod:`django_pq.timing`'s (re-exported here).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction

from django_pq.conf import pq_settings
from django_pq.enqueueing import check_no_nul, check_text, prepare
from django_pq.exceptions import InvalidSchedule
from django_pq.models import Periodic, Priority, Task
from django_pq.store.schedules import database_now, notify_schedules_changed
from django_pq.task_paths import task_path
from django_pq.timing import (
    MAX_INTEGER,
    check_one_of,
    next_runs,
    next_slot,
    validate_cron,
    validate_interval,
    validate_timezone,
)

__all__ = [
    "describe",
    "next_runs",
    "next_slot",
    "pause",
    "resume",
    "run_now",
    "schedule",
    "unschedule",
    "validate_cron",
    "validate_interval",
    "validate_timezone",
]


def describe(periodic: Periodic) -> str:
    """A person's reading of a schedule: "every 5 minutes", "at 09:00 on Monday (Europe/Berlin)"."""
    return periodic.description


def schedule(
    func: Callable[..., Any],
    *args: Any,
    run_every: dt.timedelta | float | None = None,
    cron: str | None = None,
    timezone: str | None = None,
    key: str = "",
    max_concurrent: int | None = 1,
    active: bool | None = None,
    priority: int = Priority.NORMAL,
    queue: str | None = None,
    max_runtime: float | None = None,
    max_attempts: int | None = None,
    client_id: str | None = None,
    **kwargs: Any,
) -> Periodic:
    """Create or update the schedule of ``func`` (one per ``key``) and return it.

    Exactly one of ``run_every`` (a positive timedelta) or ``cron`` (five fields, in
    ``timezone``, default ``settings.TIME_ZONE``). ``max_concurrent=1`` skips a tick while
    a previous run is pending or running; ``None`` allows any number. ``active=None``
    leaves an existing schedule's pause as it is (new schedules start active). Changing
    the timing recomputes ``next_run``; changing anything else keeps it.
    """
    periodic, _ = _upsert(
        func,
        args,
        kwargs,
        run_every=run_every,
        cron=cron,
        timezone=timezone,
        key=key,
        max_concurrent=max_concurrent,
        active=active,
        priority=priority,
        queue=queue,
        max_runtime=max_runtime,
        max_attempts=max_attempts,
        client_id=client_id,
        is_declared=False,
    )
    return periodic


def _validated(options: dict[str, Any]) -> dict[str, Any]:
    run_every, cron = options["run_every"], options["cron"]
    check_one_of(run_every, cron)
    max_concurrent = options["max_concurrent"]
    if max_concurrent is not None and (
        isinstance(max_concurrent, bool)
        or not isinstance(max_concurrent, int)
        or not 1 <= max_concurrent <= MAX_INTEGER
    ):
        raise InvalidSchedule(
            f"max_concurrent must be an integer >= 1 and <= {MAX_INTEGER}, or None for no limit; "
            f"got {max_concurrent!r}."
        )
    if not isinstance(options["key"], str) or len(options["key"]) > 255:
        raise InvalidSchedule(
            f"key must be a string of at most 255 characters, got {options['key']!r}."
        )
    check_no_nul("key", options["key"])
    if options["client_id"] is not None:
        check_text("client_id", options["client_id"], 255)
    # The task options get the same checks as enqueue().
    prepared = prepare(
        options["func"],
        *options["args"],
        priority=options["priority"],
        queue=options["queue"],
        max_runtime=options["max_runtime"],
        max_attempts=options["max_attempts"],
        **options["kwargs"],
    )
    return {
        "name": prepared.name,
        "payload": prepared.payload,
        "priority": prepared.priority,
        "queue": prepared.queue,
        "run_every": None if run_every is None else validate_interval(run_every),
        "cron": None if cron is None else validate_cron(cron),
        "timezone": validate_timezone(options["timezone"] or settings.TIME_ZONE),
        "max_concurrent": options["max_concurrent"],
        "max_runtime": prepared.max_runtime,
        "max_attempts": options["max_attempts"],
        "client_id": options["client_id"],
    }


def _upsert(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    active: bool | None,
    is_declared: bool,
    **options: Any,
) -> tuple[Periodic, str]:
    """Create or update; returns the schedule and ``"created"``, ``"updated"`` or
    ``"unchanged"``."""
    fields = _validated({"func": func, "args": args, "kwargs": kwargs, **options})
    using = pq_settings.DATABASE
    with transaction.atomic(using=using):
        now = database_now(using)
        existing = (
            Periodic.objects.using(using)
            .select_for_update()
            .filter(name=fields["name"], key=options["key"])
            .first()
        )
        timing = ("run_every", "cron", "timezone")
        if existing is None:
            periodic = Periodic(
                key=options["key"],
                active=True if active is None else active,
                is_declared=is_declared,
                **fields,
            )
            periodic.next_run = periodic.first_slot_after(now)
            periodic.save(using=using)
        else:
            periodic = existing
            retimed = any(getattr(periodic, name) != fields[name] for name in timing)
            if active is not None:
                fields["active"] = active
            if active:
                fields["error"] = ""  # made active again: a worker's old complaint is void
            fields["is_declared"] = is_declared
            changed = [name for name, value in fields.items() if getattr(periodic, name) != value]
            if not changed:
                return periodic, "unchanged"  # syncing the same declarations writes nothing
            for name in changed:
                setattr(periodic, name, fields[name])
            if retimed:
                periodic.next_run = periodic.first_slot_after(now)
                changed.append("next_run")
            periodic.updated_at = now
            periodic.save(using=using, update_fields=[*changed, "updated_at"])
        notify_schedules_changed(using)
    return periodic, "updated" if existing is not None else "created"


def _lookup(func_or_name: Callable[..., Any] | str, key: str) -> Periodic:
    name = func_or_name if isinstance(func_or_name, str) else task_path(func_or_name)
    return Periodic.objects.using(pq_settings.DATABASE).get(name=name, key=key)


def unschedule(func_or_name: Callable[..., Any] | str, key: str = "") -> bool:
    """Delete a schedule (its past runs stay, unlinked). Returns whether one existed."""
    try:
        periodic = _lookup(func_or_name, key)
    except Periodic.DoesNotExist:
        return False
    periodic.delete()
    return True


def pause(func_or_name: Callable[..., Any] | str, key: str = "") -> Periodic:
    """Stop a schedule from firing; it keeps its row and history."""
    periodic = _lookup(func_or_name, key)
    periodic.pause()
    return periodic


def resume(func_or_name: Callable[..., Any] | str, key: str = "") -> Periodic:
    """Let a paused schedule fire again, from the next slot after now (no burst of missed runs)."""
    periodic = _lookup(func_or_name, key)
    periodic.resume()
    return periodic


def run_now(periodic: Periodic) -> Task | None:
    """Fire one run now, leaving ``next_run`` alone; None if ``max_concurrent`` runs are live."""
    return periodic.run_now()
