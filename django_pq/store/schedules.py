"""Statements on ``pq_periodic``: the worker's firing of due schedules, "run now", and the
schedules-changed notification.

The unique (periodic, slot) constraint on ``pq_tasks`` makes a second run of one slot
impossible, however many firers race; SKIP LOCKED makes them split the due rows instead
of waiting on each other.
"""

from __future__ import annotations

import datetime as dt

from django.db import connections

from django_pq.conf import pq_settings
from django_pq.notify import SCHEDULE_CHANGED_PAYLOAD, task_ready_sql
from django_pq.timing import EARLIEST_MOMENT, LATEST_MOMENT, LONGEST_INTERVAL

# The moments and intervals psycopg can load (a datetime, a timedelta); other values come
# back as NULL, with their text, so reading a row never fails.
_EARLIEST = f"'{EARLIEST_MOMENT:%Y-%m-%d}+00'::timestamptz"
_LATEST = f"'{LATEST_MOMENT:%Y-%m-%d}+00'::timestamptz"
_MOMENTS = f"{_EARLIEST} AND {_LATEST}"
_INTERVALS = f"interval '1 microsecond' AND interval '{LONGEST_INTERVAL.days} days'"

DUE = f"""
    SELECT id,
        CASE WHEN run_every BETWEEN {_INTERVALS} THEN run_every END, run_every::text,
        cron, timezone,
        CASE WHEN next_run BETWEEN {_MOMENTS} THEN next_run END, next_run::text,
        now()
    FROM pq_periodic
    WHERE active AND (next_run <= now() OR next_run NOT BETWEEN {_MOMENTS})
    ORDER BY next_run
    LIMIT 100
    FOR UPDATE SKIP LOCKED
"""
"""Up to 100 due schedules, locked (SKIP LOCKED: concurrent firers split them), and those
whose ``next_run`` is out of range ('infinity' is never due, yet breaks every
``next_run - now()``). Interval and moment columns psycopg could not load come back as
NULL beside their text, so reading a row never fails."""

SECONDS_TO_NEXT_DUE = f"""
    SELECT extract(epoch FROM min(next_run) - now()) FROM pq_periodic
    WHERE active AND next_run BETWEEN {_MOMENTS}
"""
"""Seconds until the next active schedule is due (NULL: none), over in-range rows only."""

DISABLE = f"""
    UPDATE pq_periodic p SET active = false, error = %(error)s, updated_at = now(),
        next_run = LEAST(GREATEST(p.next_run, {_EARLIEST}), {_LATEST}),
        run_every = CASE WHEN p.run_every > interval '{LONGEST_INTERVAL.days} days'
            THEN interval '{LONGEST_INTERVAL.days} days' ELSE p.run_every END
    WHERE p.id = %(id)s
"""
"""Disable schedule ``%(id)s`` with ``%(error)s`` stored. Out-of-range values are brought
into range (their text is in the error), so the row can be read again, by the admin
above all."""

_LIVE_RUNS = """(SELECT count(*) FROM pq_tasks t
                 WHERE t.periodic_id = p.id AND t.status IN ('pending', 'running'))"""


def fire_statement(advance: bool) -> str:
    """Insert the run of each due schedule and (when ``advance``) move its ``next_run``.

    ``advance=True`` takes ``(ids[], next_runs[], default_max_attempts, channel)`` and fires
    each schedule's current slot. ``advance=False`` is "run now": ``(id,
    default_max_attempts, channel)``, a slot of now, and ``next_run`` left alone. Returns
    one row per schedule: the new task id (NULL when skipped) and the schedule id.
    """
    if advance:
        due = """SELECT p.*, d.new_next_run, p.next_run AS slot, {live} AS live
                 FROM pq_periodic p
                 JOIN unnest(%s::bigint[], %s::timestamptz[]) AS d(id, new_next_run)
                   ON d.id = p.id"""
    else:
        due = """SELECT p.*, p.next_run AS new_next_run, now() AS slot, {live} AS live
                 FROM pq_periodic p WHERE p.id = %s FOR UPDATE"""
    return f"""
        WITH due AS MATERIALIZED ({due.format(live=_LIVE_RUNS)}),
        allowed AS (
            SELECT * FROM due WHERE max_concurrent IS NULL OR live < max_concurrent
        ),
        inserted AS (
            INSERT INTO pq_tasks (
                queue, name, payload, priority, run_at, max_attempts, max_runtime,
                status, attempts, error, error_code, is_cancel_requested, periodic_id, slot
            )
            SELECT queue, name, payload, priority, slot,
                COALESCE(max_attempts, %s), max_runtime,
                'pending', 0, '', '', false, id, slot
            FROM allowed
            ON CONFLICT (periodic_id, slot) DO NOTHING
            RETURNING id, periodic_id, queue, run_at
        ),
        advanced AS (
            UPDATE pq_periodic q SET
                next_run = due.new_next_run,
                last_run = CASE WHEN due.id IN (SELECT periodic_id FROM inserted)
                           THEN due.slot ELSE q.last_run END,
                skipped_runs = LEAST(q.skipped_runs::bigint
                    + CASE WHEN due.id IN (SELECT id FROM allowed) THEN 0 ELSE 1 END,
                    2147483647),
                updated_at = now()
            FROM due WHERE q.id = due.id AND {"true" if advance else "false"}
            RETURNING q.id
        ),
        notified AS (
            SELECT pg_notify(%s, {task_ready_sql("min(run_at)", "queue")})
            FROM inserted GROUP BY queue
        )
        SELECT inserted.id, due.id FROM due LEFT JOIN inserted ON inserted.periodic_id = due.id
        WHERE (SELECT count(*) FROM notified) >= 0 AND (SELECT count(*) FROM advanced) >= 0
    """


def database_now(using: str) -> dt.datetime:
    """The database's clock (``now()``: the start of the current transaction), which every
    schedule's slots are computed from, whatever the clock of this machine says."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT now()")
        now: dt.datetime = cursor.fetchone()[0]
    return now


def notify_schedules_changed(using: str) -> None:
    """Tell workers a schedule changed: they keep a timer for the next due one. Sent in the
    caller's transaction, so they hear of it only once the change commits."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT pg_notify(%s, %s)", [pq_settings.NOTIFY_CHANNEL, SCHEDULE_CHANGED_PAYLOAD]
        )


def run_now(periodic_id: int) -> int | None:
    """Fire one run of schedule ``periodic_id`` now, leaving its ``next_run`` alone; the new
    task's id, or None when ``max_concurrent`` runs are live (or there is no such schedule)."""
    with connections[pq_settings.DATABASE].cursor() as cursor:
        cursor.execute(
            fire_statement(advance=False),
            [periodic_id, pq_settings.MAX_ATTEMPTS, pq_settings.NOTIFY_CHANNEL],
        )
        row = cursor.fetchone()
    return None if row is None or row[0] is None else int(row[0])
