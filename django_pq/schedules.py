"""Periodic schedules: slots from intervals and cron in a time zone, and the API to manage them.

A schedule never runs code itself. When a slot is due, a worker inserts a ``pq_tasks`` row
for it (see ``django_pq.worker.firing``), so every periodic run has history, a result,
errors, retries and admin actions like any task.

Cron is evaluated on the schedule's local wall clock. Across DST changes that means: a
local time that does not exist (the spring-forward gap) runs at the same instant one hour
later by the new offset; a local time that happens twice (fall-back) runs once, at its
first occurrence. Missed slots (workers down, schedule paused) coalesce into one run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter
from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone as django_timezone

from django_pq.conf import pq_settings
from django_pq.exceptions import InvalidSchedule
from django_pq.models import LATEST_MOMENT, LONGEST_INTERVAL, MAX_INTEGER, Periodic, Priority
from django_pq.notify import SCHEDULE_CHANGED_PAYLOAD
from django_pq.task_paths import task_path

if TYPE_CHECKING:
    from django_pq.models import Task

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

_WEEKDAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


def validate_timezone(name: Any) -> str:
    """Return ``name`` if it is an IANA time zone such as ``"Europe/Berlin"``."""
    # 64: the column's length.
    if not isinstance(name, str) or not name or len(name) > 64:
        raise InvalidSchedule(
            f"timezone must be an IANA name such as 'Europe/Berlin'; got {name!r}."
        )
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(
            f"timezone {name!r} is not a known IANA time zone; use a name such as "
            "'Europe/Berlin' or 'UTC'."
        ) from None
    return name


def validate_cron(expression: Any) -> str:
    """Return the normalized five-field cron ``expression``, or refuse it with the reason."""
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidSchedule(f"cron must be a string like '0 9 * * 1'; got {expression!r}.")
    normalized = " ".join(expression.split())
    if len(normalized.split(" ")) != 5:
        raise InvalidSchedule(
            f"cron {expression!r} must have five fields (minute hour day-of-month month "
            "day-of-week), e.g. '*/15 * * * *' or '0 9 * * mon'."
        )
    if len(normalized) > 255 or "\x00" in normalized:  # the column's length; text has no NUL
        raise InvalidSchedule(f"cron must be a string like '0 9 * * 1'; got {expression!r}.")
    try:
        # From a leap day: a date that exists at all is found within croniter's horizon.
        croniter(normalized, dt.datetime(2024, 2, 28)).get_next(dt.datetime)
    except CroniterBadDateError:
        raise InvalidSchedule(
            f"cron {expression!r} never fires: no date matches it (such as '0 0 30 2 *', "
            "February 30th). Check its day-of-month and month fields."
        ) from None
    except (CroniterError, ValueError, KeyError, OverflowError) as error:
        raise InvalidSchedule(f"cron {expression!r} is not valid: {error}") from None
    return normalized


def validate_interval(run_every: Any) -> dt.timedelta:
    """A positive ``timedelta`` (a number is taken as seconds) whose first slot after now
    is a moment the database can store."""
    if isinstance(run_every, int | float) and not isinstance(run_every, bool):
        try:
            run_every = dt.timedelta(seconds=run_every)
        except (OverflowError, ValueError):  # too many seconds, or NaN
            raise InvalidSchedule(
                f"run_every must be a positive timedelta (or seconds) of at most "
                f"{LONGEST_INTERVAL.days} days; got {run_every!r}."
            ) from None
    if not isinstance(run_every, dt.timedelta) or run_every <= dt.timedelta(0):
        raise InvalidSchedule(
            f"run_every must be a positive timedelta (or seconds), got {run_every!r}."
        )
    if run_every > LATEST_MOMENT - django_timezone.now():
        raise InvalidSchedule(
            f"run_every={run_every!r} is too long: its first run would fall after "
            f"{LATEST_MOMENT:%Y-%m-%d}, past what a timestamp holds. Use a shorter interval."
        )
    return run_every


def _check_one_of(run_every: Any, cron: Any) -> None:
    if (run_every is None) == (cron is None):
        raise InvalidSchedule(
            "Give exactly one of run_every (an interval) or cron (an expression); "
            f"got run_every={run_every!r}, cron={cron!r}."
        )


def _local_wall_time(moment: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def next_slot(
    *,
    run_every: dt.timedelta | None,
    cron: str | None,
    timezone: str,
    after: dt.datetime,
    anchor: dt.datetime | None = None,
) -> dt.datetime:
    """The first slot strictly after ``after`` (aware; returned in UTC).

    Intervals count from ``anchor`` (the previous slot), so slots do not drift with the
    worker's clock; missed slots are skipped, not piled up. Cron runs on the local wall
    clock of ``timezone`` (see the module docstring for DST).

    Total over what a row can hold: any timing it cannot compute a slot for (an unknown
    time zone, a cron that is invalid or never fires, a slot past LATEST_MOMENT) raises
    :class:`InvalidSchedule` saying why, and nothing else.
    """
    _check_one_of(run_every, cron)
    try:
        slot = _next_slot(run_every, cron, timezone, after, anchor)
    except InvalidSchedule:
        raise
    except CroniterBadDateError:
        raise InvalidSchedule(f"cron {cron!r} never fires after {after:%Y-%m-%d}.") from None
    except (ValueError, KeyError, TypeError, OverflowError) as error:
        # Name the part at fault, as the API would have refused it (ZoneInfoNotFoundError
        # is a KeyError, CroniterError a ValueError).
        if cron is not None:
            validate_cron(cron)
            validate_timezone(timezone)
        what = f"cron {cron!r}" if cron is not None else f"run_every {run_every!r}"
        raise InvalidSchedule(f"{what} has no slot after {after:%Y-%m-%d}: {error}") from None
    if slot > LATEST_MOMENT:
        raise InvalidSchedule(
            f"the next slot ({slot:%Y-%m-%d}) falls after {LATEST_MOMENT:%Y-%m-%d}, past what "
            "a timestamp holds; use a shorter interval or a cron that fires sooner."
        )
    return slot


def _next_slot(
    run_every: dt.timedelta | None,
    cron: str | None,
    timezone: str,
    after: dt.datetime,
    anchor: dt.datetime | None,
) -> dt.datetime:
    if run_every is not None:
        start = anchor or after
        if start > after:
            return start.astimezone(dt.UTC)
        missed = (after - start) // run_every + 1
        return (start + missed * run_every).astimezone(dt.UTC)
    assert cron is not None
    zone = ZoneInfo(timezone)
    wall = _local_wall_time(after, zone)
    iterator = croniter(cron, wall)
    while True:
        candidate_wall: dt.datetime = iterator.get_next(dt.datetime)
        # fold=0: a repeated local time means its first occurrence; a skipped one maps
        # to the instant the old offset gives, which the new offset shows an hour later.
        candidate = candidate_wall.replace(tzinfo=zone, fold=0)
        if candidate > after:
            return candidate.astimezone(dt.UTC)


def next_runs(
    *,
    run_every: dt.timedelta | None,
    cron: str | None,
    timezone: str,
    after: dt.datetime,
    count: int = 5,
) -> list[dt.datetime]:
    """The next ``count`` slots after ``after``, in the schedule's time zone (for previews)."""
    zone = ZoneInfo(timezone)
    runs: list[dt.datetime] = []
    moment, anchor = after, after if run_every is not None else None
    for _ in range(count):
        moment = next_slot(
            run_every=run_every, cron=cron, timezone=timezone, after=moment, anchor=anchor
        )
        anchor = moment if run_every is not None else None
        runs.append(moment.astimezone(zone))
    return runs


def _plural(number: int, unit: str) -> str:
    return f"{number} {unit}" if number == 1 else f"{number} {unit}s"


def _describe_interval(run_every: dt.timedelta) -> str:
    seconds = run_every.total_seconds()
    if seconds != int(seconds):
        return f"every {seconds:g} seconds"
    remaining, parts = int(seconds), []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if remaining >= size:
            parts.append(_plural(remaining // size, unit))
            remaining %= size
    if len(parts) == 1 and parts[0].startswith("1 "):
        return f"every {parts[0][2:]}"  # "every hour", not "every 1 hour"
    return "every " + " ".join(parts)


def _describe_cron(cron: str, timezone: str) -> str:
    zone = f" ({timezone})"
    fields = cron.split(" ")
    if len(fields) != 5:  # a row written around the API; shown, never a crash
        return f"cron '{cron}'{zone}"
    minute, hour, day, month, weekday = fields
    if cron == "* * * * *":
        return "every minute"
    if minute.startswith("*/") and hour == day == month == weekday == "*":
        return f"every {minute[2:]} minutes"
    if minute.isdigit() and hour == day == month == weekday == "*":
        return f"at minute {minute} of every hour"
    if minute.isdigit() and hour.isdigit() and day == month == "*":
        at = f"at {int(hour):02d}:{int(minute):02d}"
        if weekday == "*":
            return f"{at} every day{zone}"
        days = _weekday_names(weekday)
        if days:
            return f"{at} on {days}{zone}"
    return f"cron '{cron}'{zone}"


def _weekday_names(field: str) -> str:
    names = []
    for part in field.split(","):
        key = part.strip().lower()[:3]
        lookup = {name.lower()[:3]: name for name in _WEEKDAYS}
        if key.isdigit() and 0 <= int(key) <= 7:
            names.append(_WEEKDAYS[int(key) % 7])
        elif key in lookup:
            names.append(lookup[key])
        else:
            return ""
    return ", ".join(names)


def describe(periodic: Periodic) -> str:
    """A person's reading of a schedule: "every 5 minutes", "at 09:00 on Monday (Europe/Berlin)"."""
    if periodic.run_every is not None:
        return _describe_interval(periodic.run_every)
    return _describe_cron(periodic.cron or "", periodic.timezone)


def _db_now(using: str) -> dt.datetime:
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT now()")
        now: dt.datetime = cursor.fetchone()[0]
    return now


def notify_schedules_changed(using: str) -> None:
    """Tell workers a schedule changed: they keep a timer for the next due one."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT pg_notify(%s, %s)", [pq_settings.NOTIFY_CHANNEL, SCHEDULE_CHANGED_PAYLOAD]
        )


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
    from django_pq.enqueueing import check_no_nul, check_text, prepare

    run_every, cron = options["run_every"], options["cron"]
    _check_one_of(run_every, cron)
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
        now = _db_now(using)
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
            periodic.next_run = _first_slot_after(periodic, now)
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
                periodic.next_run = _first_slot_after(periodic, now)
                changed.append("next_run")
            periodic.updated_at = now
            periodic.save(using=using, update_fields=[*changed, "updated_at"])
        notify_schedules_changed(using)
    return periodic, "updated" if existing is not None else "created"


def _first_slot_after(periodic: Periodic, now: dt.datetime) -> dt.datetime:
    """The schedule's first slot after ``now``: for a new, retimed or resumed schedule."""
    return next_slot(
        run_every=periodic.run_every, cron=periodic.cron, timezone=periodic.timezone, after=now
    )


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


def set_active(periodic: Periodic, active: bool) -> None:
    """Pause or resume. Resuming clears the error a worker stored when it disabled the
    schedule, and refuses (:class:`InvalidSchedule`) a timing that still has no next slot."""
    using = pq_settings.DATABASE
    with transaction.atomic(using=using):
        now = _db_now(using)
        fields = ["active", "updated_at"]
        if active:
            try:
                next_run = _first_slot_after(periodic, now)
            except InvalidSchedule as error:
                raise InvalidSchedule(
                    f"Schedule {periodic} cannot be resumed: {error} Fix its timing "
                    "(pq.schedule() or its admin page), then resume it."
                ) from None
            periodic.next_run, periodic.error = next_run, ""
            fields += ["next_run", "error"]
        periodic.active = active
        periodic.updated_at = now
        periodic.save(using=using, update_fields=fields)
        notify_schedules_changed(using)


def run_now(periodic: Periodic) -> Task | None:
    """Fire one run now, leaving ``next_run`` alone; None if ``max_concurrent`` runs are live."""
    from django_pq.models import Task
    from django_pq.worker.firing import fire_statement

    using = pq_settings.DATABASE
    with connections[using].cursor() as cursor:
        cursor.execute(
            fire_statement(advance=False),
            [periodic.pk, pq_settings.MAX_ATTEMPTS, pq_settings.NOTIFY_CHANNEL],
        )
        row = cursor.fetchone()
    if row is None or row[0] is None:
        periodic.refresh_from_db(using=using)
        return None
    return Task.objects.using(using).get(pk=row[0])
