"""Firing due schedules: one task row per (schedule, slot), however many workers tick.

Due rows are locked with SKIP LOCKED, so concurrent workers split them instead of
waiting; the unique (periodic, slot) constraint makes a second fire of a slot impossible
even so. A tick whose schedule already has ``max_concurrent`` live runs is skipped and
counted in ``skipped_runs``. ``next_run`` advances from the slot (intervals) or the cron
after the database's now, so missed slots coalesce into one run.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import psycopg

from django_pq.notify import task_ready_sql
from django_pq.schedules import next_slot

logger = logging.getLogger("django_pq.worker")

DUE = """
    SELECT id, run_every, cron, timezone, next_run, now() FROM pq_periodic
    WHERE active AND next_run <= now()
    ORDER BY next_run
    LIMIT 100
    FOR UPDATE SKIP LOCKED
"""

SECONDS_TO_NEXT_DUE = (
    "SELECT extract(epoch FROM min(next_run) - now()) FROM pq_periodic WHERE active"
)

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
                skipped_runs = q.skipped_runs
                    + CASE WHEN due.id IN (SELECT id FROM allowed) THEN 0 ELSE 1 END,
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


def fire_due(
    conn: psycopg.Connection[Any], channel: str, default_max_attempts: int
) -> float | None:
    """Fire every due schedule in one transaction; seconds until the next one is due."""
    with conn.transaction():
        rows = conn.execute(DUE).fetchall()
        if rows:
            ids, next_runs = [], []
            for periodic_id, run_every, cron, timezone, slot, now in rows:
                ids.append(periodic_id)
                next_runs.append(_next_run(run_every, cron, timezone, slot, now))
            fired = conn.execute(
                fire_statement(advance=True), [ids, next_runs, default_max_attempts, channel]
            ).fetchall()
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
        seconds = conn.execute(SECONDS_TO_NEXT_DUE).fetchone()
    return None if seconds is None or seconds[0] is None else float(seconds[0])


def _next_run(
    run_every: dt.timedelta | None,
    cron: str | None,
    timezone: str,
    slot: dt.datetime,
    now: dt.datetime,
) -> dt.datetime:
    return next_slot(
        run_every=run_every,
        cron=cron,
        timezone=timezone,
        after=max(slot, now),
        anchor=slot + run_every if run_every is not None else None,
    )
