"""Timing: the slots of an interval or a cron in a time zone, their validation, and a
person's reading of them; and the limits every stored moment, interval and integer must
keep. Plain values in and out: no models, no database.

Cron is evaluated on the schedule's local wall clock. Across DST changes that means: a
local time that does not exist (the spring-forward gap) runs at the same instant one hour
later by the new offset; a local time that happens twice (fall-back) runs once, at its
first occurrence.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from django_pq.exceptions import InvalidSchedule

#: The moments every part of the system can hold in any UTC offset: a Postgres timestamp
#: (which also admits ``'infinity'``) and a Python datetime (years 1 to 9999). Every
#: timestamp column is checked against them, and the API refuses moments outside.
EARLIEST_MOMENT = dt.datetime(1, 1, 2, tzinfo=dt.UTC)
LATEST_MOMENT = dt.datetime(9999, 12, 30, tzinfo=dt.UTC)

#: The longest schedule interval: longer ones cannot have two slots between those moments.
LONGEST_INTERVAL = LATEST_MOMENT - EARLIEST_MOMENT

#: The largest value of an ``integer`` column (attempts, max_attempts, max_concurrent).
MAX_INTEGER = 2**31 - 1


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
    if run_every > LATEST_MOMENT - dt.datetime.now(dt.UTC):
        raise InvalidSchedule(
            f"run_every={run_every!r} is too long: its first run would fall after "
            f"{LATEST_MOMENT:%Y-%m-%d}, past what a timestamp holds. Use a shorter interval."
        )
    return run_every


def check_one_of(run_every: Any, cron: Any) -> None:
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
    check_one_of(run_every, cron)
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


def describe(run_every: dt.timedelta | None, cron: str | None, timezone: str) -> str:
    """A person's reading of a timing: "every 5 minutes", "at 09:00 on Monday (Europe/Berlin)"."""
    if run_every is not None:
        return _describe_interval(run_every)
    return _describe_cron(cron or "", timezone)
