"""Firing due schedules: one task row per (schedule, slot), however many workers tick.

Due rows are locked with SKIP LOCKED, so concurrent workers split them instead of
waiting; the unique (periodic, slot) constraint makes a second fire of a slot impossible
even so. A tick whose schedule already has ``max_concurrent`` live runs is skipped and
counted in ``skipped_runs``. ``next_run`` advances from the slot (intervals) or the cron
after the database's now, so missed slots coalesce into one run.

Firing is total over what a ``pq_periodic`` row can hold: every worker fires every
schedule, so a row it cannot fire (an invalid cron, an unknown time zone, a cron that never
fires, an interval or ``next_run`` out of range, values its run row refuses) must not stop
it. Such a schedule is disabled (``active = false``) with the reason in ``error``, in a
savepoint of its own, and the others fire as usual.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import psycopg

from django_pq.exceptions import InvalidSchedule
from django_pq.schedules import next_slot
from django_pq.store.schedules import DISABLE, DUE, SECONDS_TO_NEXT_DUE, fire_statement
from django_pq.timing import EARLIEST_MOMENT, LATEST_MOMENT, LONGEST_INTERVAL

logger = logging.getLogger("django_pq.worker")


def fire_due(
    conn: psycopg.Connection[Any], channel: str, default_max_attempts: int
) -> float | None:
    """Fire every due schedule in one transaction; seconds until the next one is due.

    Never raises for a row's values: a schedule it cannot fire is disabled with its error
    (see the module docstring). Only connection errors propagate.
    """
    with conn.transaction():
        ids, next_runs, broken = [], [], []
        for periodic_id, *timing in conn.execute(DUE).fetchall():
            try:
                next_runs.append(_next_run(*timing))
                ids.append(periodic_id)
            except Exception as error:  # a row any writer filled must never stop the worker
                broken.append((periodic_id, _reason(error)))
        _disable(conn, broken)
        if ids:
            _log_fired(_fire(conn, ids, next_runs, default_max_attempts, channel))
        seconds = conn.execute(SECONDS_TO_NEXT_DUE).fetchone()
    return None if seconds is None or seconds[0] is None else float(seconds[0])


def _fire(
    conn: psycopg.Connection[Any],
    ids: list[int],
    next_runs: list[dt.datetime],
    default_max_attempts: int,
    channel: str,
) -> list[tuple[Any, ...]]:
    """Fire all in one statement; if a row makes it fail, fire one by one, to disable
    only the schedules whose own statement fails."""
    try:
        with conn.transaction():
            return conn.execute(
                fire_statement(advance=True), [ids, next_runs, default_max_attempts, channel]
            ).fetchall()
    except psycopg.OperationalError:
        raise
    except psycopg.Error as error:
        if len(ids) == 1:
            _disable(conn, [(ids[0], _reason(error))])
            return []
    fired: list[tuple[Any, ...]] = []
    for periodic_id, next_run in zip(ids, next_runs, strict=True):
        fired += _fire(conn, [periodic_id], [next_run], default_max_attempts, channel)
    return fired


def _disable(conn: psycopg.Connection[Any], broken: list[tuple[int, str]]) -> None:
    """Disable the schedules, each in a savepoint, so none can take the others along."""
    for periodic_id, error in broken:
        try:
            with conn.transaction():
                conn.execute(DISABLE, {"id": periodic_id, "error": error})
        except psycopg.OperationalError:
            raise
        except psycopg.Error as failure:  # the row breaks a check even so: leave it, live on
            logger.error(
                "Schedule %s cannot be fired (%s) nor disabled (%s)",
                periodic_id,
                error,
                str(failure).strip(),
                extra={"periodic_id": periodic_id},
            )
            continue
        logger.error(
            "Schedule %s disabled: %s",
            periodic_id,
            error,
            extra={"periodic_id": periodic_id, "error": error},
        )


def _reason(error: BaseException) -> str:
    """The text stored in ``error``: what is wrong, and what to do."""
    if isinstance(error, InvalidSchedule):
        text = str(error)
    elif isinstance(error, psycopg.Error):
        text = f"Firing it failed in the database: {str(error).strip()}"
    else:
        text = f"Firing it failed: {type(error).__name__}: {error}"
    # Postgres text cannot hold NUL, and a reason must never be the next failure.
    text = text.replace("\x00", "\\x00")
    return f"{text} Fix the schedule, then resume it."


def _log_fired(fired: list[tuple[Any, ...]]) -> None:
    for task_id, periodic_id in fired:
        if task_id is None:
            logger.info(
                "Schedule %s skipped a tick: max_concurrent runs still live",
                periodic_id,
                extra={"periodic_id": periodic_id},
            )
        else:
            logger.info(
                "Schedule %s fired task %s",
                periodic_id,
                task_id,
                extra={"periodic_id": periodic_id, "task_id": task_id},
            )


def _next_run(
    run_every: dt.timedelta | None,
    run_every_text: str | None,
    cron: str | None,
    timezone: str,
    slot: dt.datetime | None,
    slot_text: str,
    now: dt.datetime,
) -> dt.datetime:
    """The schedule's next_run after firing ``slot``; InvalidSchedule if it has none."""
    if run_every is None and run_every_text is not None:
        raise InvalidSchedule(
            f"run_every {run_every_text!r} is out of range: it must be positive and at most "
            f"{LONGEST_INTERVAL.days} days."
        )
    if slot is None:
        raise InvalidSchedule(
            f"next_run {slot_text!r} is out of range: it must fall between "
            f"{EARLIEST_MOMENT:%Y-%m-%d} and {LATEST_MOMENT:%Y-%m-%d} (UTC)."
        )
    anchor = None
    if run_every is not None:
        if slot > LATEST_MOMENT - run_every:
            raise InvalidSchedule(
                f"run_every {run_every_text!r} is too long: the slot after {slot:%Y-%m-%d} "
                f"would fall after {LATEST_MOMENT:%Y-%m-%d}, past what a timestamp holds. "
                "Use a shorter interval."
            )
        anchor = slot + run_every
    return next_slot(
        run_every=run_every, cron=cron, timezone=timezone, after=max(slot, now), anchor=anchor
    )
