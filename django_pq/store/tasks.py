"""Statements on ``pq_tasks`` from the application: enqueue, upsert, cancel, retry, run
now, and the admin's list of task names.

Each runs as one statement on the Django connection of ``PQ_DATABASE``, so it joins the
caller's ``transaction.atomic()`` block, and its NOTIFY is part of that statement: workers
hear of a row only when the transaction that wrote it commits.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from django.db import connections

from django_pq.conf import pq_settings
from django_pq.models import VERSION_FIELDS, Task
from django_pq.notify import cancel_requested_sql, notifying, task_ready_sql

#: The values of one task to insert, in the order :func:`insert` and :func:`upsert` take
#: them (``payload`` as JSON text; ``run_at`` or ``delay`` or neither, for now).
ROW_COLUMNS = (
    "queue",
    "name",
    "payload",
    "priority",
    "run_at",
    "delay",
    "client_id",
    "max_attempts",
    "max_runtime",
    "soft_runtime",
    "retry_policy",
    "keep_result",
    "limit_key",
    "fair_key",
    "status",  # pending, or blocked: it waits for other tasks (django_pq.dependencies)
    "has_dependents",
    "run_if",
    "takes_result",
    "batch_id",
    "fair_turn",  # last: not a field of PreparedTask, but its place in the batch
)

# Many rows from parallel arrays: one statement of constant text however many it writes.
_ROWS = """
    SELECT * FROM unnest(
        %s::text[], %s::text[], %s::jsonb[], %s::smallint[], %s::timestamptz[],
        %s::interval[], %s::text[], %s::integer[], %s::double precision[],
        %s::double precision[], %s::jsonb[], %s::double precision[], %s::text[], %s::text[],
        %s::text[], %s::boolean[], %s::text[], %s::boolean[], %s::bigint[], %s::bigint[]
    ) WITH ORDINALITY
    AS r(queue, name, payload, priority, run_at, delay, client_id, max_attempts, max_runtime,
         soft_runtime, retry_policy, keep_result, limit_key, fair_key, status, has_dependents,
         run_if, takes_result, batch_id, fair_turn, n)
"""
# One row from scalar parameters, which binds faster than one-element arrays.
_ONE_ROW = """
    SELECT %s::text AS queue, %s::text AS name, %s::jsonb AS payload, %s::smallint AS priority,
        %s::timestamptz AS run_at, %s::interval AS delay, %s::text AS client_id,
        %s::integer AS max_attempts, %s::double precision AS max_runtime,
        %s::double precision AS soft_runtime, %s::jsonb AS retry_policy,
        %s::double precision AS keep_result, %s::text AS limit_key, %s::text AS fair_key,
        %s::text AS status, %s::boolean AS has_dependents, %s::text AS run_if,
        %s::boolean AS takes_result, %s::bigint AS batch_id, %s::bigint AS fair_turn, 1 AS n
"""
_INSERT = """
    INSERT INTO pq_tasks AS t (
        queue, name, payload, priority, run_at, client_id, max_attempts, max_runtime,
        soft_runtime, retry_policy, keep_result, limit_key, fair_key, fair_rank, status,
        has_dependents, run_if, takes_result, batch_id, attempts, error, error_code,
        is_cancel_requested
    )
    SELECT r.queue, r.name, r.payload, r.priority, COALESCE(r.run_at, now() + r.delay, now()),
        r.client_id, r.max_attempts, r.max_runtime, r.soft_runtime, r.retry_policy,
        r.keep_result, r.limit_key, r.fair_key, {fair_rank}, r.status, r.has_dependents,
        r.run_if, r.takes_result, r.batch_id, 0, '', '', false
    FROM ({rows}) AS r
    ORDER BY r.n
"""


# A fair key's turn: after its own pending tasks of the priority, and no earlier than the
# turn being claimed now (one turn before the lowest pending one), so a key that comes
# back after a pause takes its place in the round-robin, not ahead of all the others.
_FAIR_RANK = """CASE WHEN r.fair_key IS NULL THEN 0 ELSE greatest(0,
        (SELECT max(x.fair_rank) FROM pq_tasks x WHERE x.status = 'pending'
         AND x.fair_key = r.fair_key AND x.priority = r.priority),
        (SELECT min(x.fair_rank) - 1 FROM pq_tasks x WHERE x.status = 'pending'
         AND x.fair_key IS NOT NULL AND x.priority = r.priority)) + r.fair_turn END"""


def _returning_rows(modifying_sql: str) -> str:
    """The statement, returning whole rows and announcing those that are ready."""
    columns = ", ".join(f"t.{field.column}" for field in Task._meta.concrete_fields)
    return notifying(modifying_sql, columns)


def _upsert_assignments() -> str:
    """SET clauses: a running row keeps its version and parks the new one in ``requeue``."""
    running = "t.status = 'running'"
    parked = ", ".join(f"'{name}', EXCLUDED.{name}" for name in VERSION_FIELDS)
    assignments = [f"requeue = CASE WHEN {running} THEN jsonb_build_object({parked}) END"]
    assignments += [
        f"{name} = CASE WHEN {running} THEN t.{name} ELSE EXCLUDED.{name} END"
        for name in VERSION_FIELDS
    ]
    fresh_run = {
        "status": "'pending'",
        "attempts": "0",
        "started_at": "NULL",
        "finished_at": "NULL",
        "result": "NULL",
        "error": "''",
        "error_code": "''",
        "worker_id": "NULL",
        "run_token": "NULL",
        "peak_rss": "NULL",
        "cpu_seconds": "NULL",
        "failure_counts": "NULL",
        "retry_decision": "NULL",
        "progress": "NULL",
        "is_cancel_requested": "false",
    }
    assignments += [
        f"{name} = CASE WHEN {running} THEN t.{name} ELSE {value} END"
        for name, value in fresh_run.items()
    ]
    return ",\n".join(assignments)


INSERT_ONE = _returning_rows(
    _INSERT.format(rows=_ONE_ROW, fair_rank=_FAIR_RANK) + " ON CONFLICT (client_id) DO NOTHING"
)
"""Insert one task (:data:`ROW_COLUMNS` as scalars); a taken ``client_id`` inserts nothing
and returns no row, without an error that would abort the caller's transaction."""

INSERT_MANY = _returning_rows(
    _INSERT.format(rows=_ROWS, fair_rank=_FAIR_RANK) + " ON CONFLICT (client_id) DO NOTHING"
)
"""Insert many tasks (:data:`ROW_COLUMNS` as one array each) in one statement; ids are
drawn in input order, and rows whose ``client_id`` is taken are left out."""

UPSERT = _returning_rows(
    _INSERT.format(rows=_ONE_ROW, fair_rank=_FAIR_RANK)
    + f" ON CONFLICT (client_id) DO UPDATE SET {_upsert_assignments()}"
)
"""Insert one task, or replace the one holding its ``client_id``: a pending or finished
row is overwritten and reset to pending (attempts back to 0); a running row keeps running
with the new version parked in ``requeue``, for its worker to apply when the run ends.
Concurrent upserts of one ``client_id`` serialize on the row."""

CANCEL = """
    WITH changed AS (
        UPDATE pq_tasks SET
            status = CASE WHEN status = 'running' THEN status ELSE 'cancelled' END,
            error_code = CASE WHEN status = 'running' THEN error_code ELSE 'cancelled' END,
            error = CASE WHEN status = 'running' THEN error
                    ELSE 'Cancelled before it started.' END,
            finished_at = CASE WHEN status = 'running' THEN finished_at ELSE now() END,
            is_cancel_requested = (status = 'running'),
            requeue = NULL
        WHERE id = ANY(%s) AND status IN ('pending', 'blocked', 'running')
        RETURNING id, status
    )
    SELECT id, status, CASE WHEN status = 'running' THEN pg_notify(%s, {cancel}) END
    FROM changed
""".format(cancel=cancel_requested_sql("id"))
"""Cancel tasks ``%s``: a pending or blocked one becomes ``cancelled`` at once; a running one is
marked, and its worker (told by NOTIFY, which it confirms against this mark) stops it. A
version parked by upsert is dropped. Returns (id, new status) per changed row."""

RETRY = """
    WITH changed AS (
        UPDATE pq_tasks SET
            status = 'pending', run_at = now(), started_at = NULL, finished_at = NULL,
            result = NULL, worker_id = NULL, run_token = NULL, is_cancel_requested = false
        WHERE id = ANY(%s) AND status IN ('failed', 'cancelled')
        RETURNING id, status, queue
    )
    SELECT id, status, pg_notify(%s, {ready})
    FROM changed
""".format(ready=task_ready_sql("now()", "queue"))
"""Put failed or cancelled tasks ``%s`` back to pending, due now, attempts kept; idle
workers of their queues are woken. Returns (id, new status) per changed row."""

RUN_NOW = notifying(
    "UPDATE pq_tasks AS t SET run_at = now() "
    "WHERE t.id = ANY(%s) AND t.status = 'pending' AND t.run_at > now()",
    "t.id, t.status, t.run_at, t.queue",
)
"""Move the pending tasks ``%s`` whose ``run_at`` is ahead to now, and wake their queues'
idle workers in the same statement. Returns one row per moved task, its id first."""

DISTINCT_NAMES = """
    WITH RECURSIVE names(name) AS (
        (SELECT name FROM pq_tasks ORDER BY name LIMIT 1)
        UNION ALL
        SELECT (SELECT t.name FROM pq_tasks t WHERE t.name > names.name ORDER BY t.name LIMIT 1)
        FROM names WHERE names.name IS NOT NULL
    )
    SELECT name FROM names WHERE name IS NOT NULL LIMIT %s
"""
"""Up to ``%s`` distinct task names, in order: a loose index scan over ``pq_tasks_name``
(name, -id), one index probe per distinct name, where ``SELECT DISTINCT name`` would read
every row."""

NEWEST_ID = "SELECT coalesce(max(id), 0) FROM pq_tasks"
"""The newest task id (0 on an empty table): every task enqueued later has a greater one."""


@functools.cache
def _converters(alias: str) -> list[tuple[int, Any, list[Any]]]:
    """Per returned column (Task's concrete fields, in order): the converters Django's ORM
    would apply to it, such as decoding JSON. Only columns that have any are listed."""
    connection = connections[alias]
    found = []
    for index, field in enumerate(Task._meta.concrete_fields):
        column = field.get_col(Task._meta.db_table)
        converters = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
        if converters:
            found.append((index, column, converters))
    return found


def write_rows(sql: str, params: Sequence[Any]) -> list[Task]:
    """Run :data:`INSERT_ONE`, :data:`INSERT_MANY` or :data:`UPSERT`; build the tasks as
    the ORM would (a raw queryset costs more per call than the statement's round trip)."""
    alias = pq_settings.DATABASE
    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, pq_settings.NOTIFY_CHANNEL])
        rows = cursor.fetchall()
    names = [field.attname for field in Task._meta.concrete_fields]
    tasks = []
    for row in rows:
        values = list(row)
        for index, column, converters in _converters(alias):
            for converter in converters:
                values[index] = converter(values[index], column, connection)
        tasks.append(Task.from_db(alias, names, values))
    return tasks


def change(sql: str, task_ids: list[int]) -> list[tuple[int, str]]:
    """Run :data:`CANCEL` or :data:`RETRY` over ``task_ids``; (id, new status) per change."""
    with connections[pq_settings.DATABASE].cursor() as cursor:
        cursor.execute(sql, [task_ids, pq_settings.NOTIFY_CHANNEL])
        return [(task_id, status) for task_id, status, _ in cursor.fetchall()]


def run_now(task_ids: list[int]) -> list[int]:
    """Run :data:`RUN_NOW`; the ids of the tasks it moved."""
    with connections[pq_settings.DATABASE].cursor() as cursor:
        cursor.execute(RUN_NOW, [task_ids, pq_settings.NOTIFY_CHANNEL])
        return [row[0] for row in cursor.fetchall()]


def newest_id(using: str) -> int:
    """Run :data:`NEWEST_ID` on the database ``using``."""
    with connections[using].cursor() as cursor:
        cursor.execute(NEWEST_ID)
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def distinct_names(limit: int) -> list[str]:
    """Run :data:`DISTINCT_NAMES`."""
    with connections[pq_settings.DATABASE].cursor() as cursor:
        cursor.execute(DISTINCT_NAMES, [limit])
        return [row[0] for row in cursor.fetchall()]


SET_PROGRESS = """
    UPDATE pq_tasks SET progress = %(progress)s::jsonb
    WHERE id = (SELECT id FROM pq_tasks
                WHERE id = %(id)s AND run_token = %(run_token)s::uuid AND status = 'running'
                FOR UPDATE SKIP LOCKED)
    RETURNING id
"""
"""Record a running task's progress (``%(progress)s``, JSON text), fenced by its run
token; a row locked at this instant (a cancel, a finish) is skipped rather than waited
for, so a task never blocks on its own progress. Returns the id when it wrote."""


MARK_AWAITED = """
    UPDATE pq_tasks SET is_awaited = true
    WHERE id = %s AND status IN ('pending', 'blocked', 'running') AND NOT is_awaited
"""
"""Mark task ``%s`` as waited on (``task.wait()``): the statements that end it then
announce its end on the notify channel's ``_done`` sibling."""

TASK_STATUS = "SELECT status FROM pq_tasks WHERE id = %s"
"""The status of task ``%s`` (no row: it was deleted)."""
