"""The read side: the queue's state, read in one statement, as one typed :class:`Snapshot`.

``pq_status``, the admin overview and the Prometheus view all render a :class:`Snapshot`
read by :func:`read_snapshot`. The snapshot is one ``SELECT`` (:data:`SNAPSHOT`) whose
parts are the statements below, so every number in it comes from the same MVCC snapshot
of the database: the counts, ages, lists and outcomes agree with each other, however
many workers write meanwhile, and whether or not the caller is inside a transaction.

Every part is answered from an index (the partial claim index for pending rows,
``pq_tasks_running`` for running ones, ``pq_tasks_finished`` for a window of finished
ones), so reading the state of a table of millions of finished rows costs about as much
as reading an empty one. A part a caller does not show is bounded to nothing by its
limit (``LIMIT 0`` reads no row). Ages and times come from the database clock, as the
worker's decisions do.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate
from typing import Any

from django.db import connections

from django_pq.conf import LONGEST_LEASE, pq_settings
from django_pq.store.flow import BUSY_KEYS, KeyNumbers

__all__ = [
    "SNAPSHOT",
    "Finished",
    "FrequentError",
    "Minute",
    "QueueCount",
    "QueueCounts",
    "QueueOutcome",
    "RunningTask",
    "ScheduleDisabled",
    "ScheduleDue",
    "Snapshot",
    "WorkerSeen",
    "read_snapshot",
]

QUEUE_COUNTS = """
    SELECT queue, 'pending' AS status, priority, count(*) AS count,
           count(*) FILTER (WHERE run_at <= now()) AS ready
    FROM pq_tasks WHERE status = 'pending'
    GROUP BY queue, priority
    UNION ALL
    SELECT queue, 'running', priority, count(*), 0
    FROM pq_tasks WHERE status = 'running'
    GROUP BY queue, priority
    UNION ALL
    SELECT queue, 'blocked', priority, count(*), 0
    FROM pq_tasks WHERE status = 'blocked'
    GROUP BY queue, priority
    ORDER BY 1, 2, 3 DESC
"""
"""Unfinished tasks by queue, status and priority, with how many pending ones are due.

One branch per status, so each is answered from its partial index (``pq_tasks_claim_fair``,
``pq_tasks_running``): the cost follows the unfinished rows, never the history.
"""

OLDEST_READY = """
    SELECT queue, extract(epoch FROM now() - min(run_at)) AS age
    FROM pq_tasks WHERE status = 'pending' AND run_at <= now()
    GROUP BY queue ORDER BY queue
"""
"""Per queue, the seconds the longest-waiting ready task has waited (``pq_tasks_claim_fair``).

A queue with nothing ready has no row.
"""

RUNNING = """
    SELECT id, name, queue, worker_id::text AS worker_id, attempts AS attempt,
           coalesce(extract(epoch FROM now() - started_at), 0) AS running_for,
           left(progress->>'done', 40) AS progress_done,
           left(progress->>'total', 40) AS progress_total
    FROM pq_tasks WHERE status = 'running'
    ORDER BY started_at, id LIMIT %(running_limit)s
"""
"""The running tasks, longest-running first, at most ``running_limit`` (``pq_tasks_running``)."""

WORKERS = f"""
    SELECT id::text AS id, hostname, pid, concurrency, queues,
           extract(epoch FROM now() - heartbeat_at) AS heartbeat_age,
           extract(epoch FROM now() - started_at) AS up_for,
           (SELECT count(*) FROM pq_tasks t
            WHERE t.status = 'running' AND t.worker_id = w.id) AS running
    FROM pq_workers w
    WHERE stopped_at IS NULL AND lease_expires_at > now()
      AND lease_expires_at <= now() + interval '{LONGEST_LEASE:.0f} seconds'
    ORDER BY hostname, pid
"""
"""The workers holding a live lease, each with its running tasks counted.

A live lease by the reaper's rule (``models.holds_a_lease``): one further ahead than any
worker may lease (``LONGEST_LEASE``) is no worker's, and its tasks are being reaped.

``pq_workers`` holds one row per worker process; the counts read ``pq_tasks_running``.
"""

SCHEDULES = """
    SELECT name, key, coalesce(cron, run_every::text) AS every, next_run,
           extract(epoch FROM next_run - now()) AS due_in
    FROM pq_periodic WHERE active AND isfinite(next_run)
    ORDER BY next_run LIMIT %(schedule_limit)s
"""
"""The active schedules due next, at most ``schedule_limit`` (``pq_periodic_due``)."""

DISABLED_SCHEDULES = """
    SELECT name, key, error, updated_at AS disabled_at FROM pq_periodic
    WHERE NOT active AND error <> ''
    ORDER BY updated_at DESC, id LIMIT %(schedule_limit)s
"""
"""Schedules a worker disabled because it could not fire them, newest first.

At most ``schedule_limit``. A schedule paused by a person has no error and is not listed.
"""

FINISHED = """
    SELECT queue, name, status, bucket, count(*) AS count, count(duration) AS timed,
           coalesce(sum(duration), 0) AS seconds
    FROM (
        SELECT queue, name, status, duration,
               CASE WHEN cardinality(%(negated_buckets)s::float8[]) = 0 THEN 0
                    ELSE cardinality(%(negated_buckets)s::float8[])
                         - width_bucket(-duration, %(negated_buckets)s::float8[])
               END AS bucket
        FROM (
            SELECT queue, name, status,
                   extract(epoch FROM finished_at - started_at) AS duration
            FROM pq_tasks
            WHERE status IN ('completed', 'failed', 'cancelled')
              AND finished_at > now() - make_interval(secs => %(window)s)
        ) AS runs
        -- A fence: grouped through it, the buckets count as a few values, not one per
        -- finished_at, so the planner hashes the groups instead of sorting the window.
        OFFSET 0
    ) AS runs
    GROUP BY GROUPING SETS ((name, status, bucket), (queue, status))
    ORDER BY name, status, bucket, queue
"""
"""The runs that finished in the last ``window`` seconds, in one range of ``pq_tasks_finished``.

Grouped two ways in the one pass: by function, status and histogram bucket (``queue``
null), with the run times' count and sum; and by queue and status (``name`` null). A run
that never started (a cancelled pending task) has no run time and no bucket.

``bucket`` is the index of the first histogram bound at or above the run time (Prometheus'
``le`` is inclusive): the number of bounds below it. ``width_bucket`` counts the bounds at
or below its operand, so it is given the negated bounds, ascending, and the negated run
time: that counts the bounds at or above the run time, and the rest lie below. Without
bounds every run is in bucket 0 and nothing is computed per row.
"""

THROUGHPUT = """
    SELECT m.start, coalesce(p.completed, 0) AS completed, coalesce(p.failed, 0) AS failed
    FROM generate_series(
        date_trunc('minute', now()) - (%(chart_minutes)s - 1) * interval '1 minute',
        date_trunc('minute', now()),
        interval '1 minute'
    ) AS m(start)
    LEFT JOIN (
        SELECT date_trunc('minute', finished_at) AS start,
            count(*) FILTER (WHERE status = 'completed') AS completed,
            count(*) FILTER (WHERE status = 'failed') AS failed
        FROM pq_tasks
        WHERE status IN ('completed', 'failed', 'cancelled')
          AND finished_at >= date_trunc('minute', now())
                             - (%(chart_minutes)s - 1) * interval '1 minute'
        GROUP BY 1
    ) AS p ON p.start = m.start
    ORDER BY m.start
"""
"""Completed and failed tasks in each of the last ``chart_minutes`` minutes, oldest first.

One range of ``pq_tasks_finished`` grouped by minute, joined onto every minute of the
range so quiet minutes show as zero. ``chart_minutes`` 0 reads nothing.
"""

FREQUENT_ERRORS = """
    SELECT name, error_code, summary, count(*) AS count, max(id) AS latest_id,
           max(finished_at) AS latest_at
    FROM (
        SELECT id, name, error_code, finished_at, left(
            CASE WHEN error LIKE 'Traceback%%'
                THEN (regexp_match(rtrim(error, E' \\n'), '[^\\n]*$'))[1]
                ELSE split_part(error, E'\\n', 1)
            END, 300) AS summary
        FROM pq_tasks
        WHERE status = 'failed' AND finished_at > now() - make_interval(secs => %(window)s)
    ) AS failures
    GROUP BY name, error_code, summary
    ORDER BY count(*) DESC, max(id) DESC
    LIMIT %(error_limit)s
"""
"""The most frequent failures of the window, by task, error code and summary line.

At most ``error_limit`` groups; the failures are a range of ``pq_tasks_finished``. A
traceback's telling line is its last (``ValueError: ...``); other errors lead with it.
"""

ESTIMATED_ROWS = (
    "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'pq_tasks'::regclass"
)
"""The size of ``pq_tasks`` by the planner's statistics (as of the last ANALYZE), no scan."""


def _rows(part: str) -> str:
    """A part's rows as one JSON array (``[]`` when it has none), in the part's order.

    Nothing at this level joins or groups the rows, so ``json_agg`` takes them in the
    order the part's ``ORDER BY`` gives them.
    """
    return f"(SELECT coalesce(json_agg(part), '[]') FROM ({part}) AS part)"


SNAPSHOT = f"""
    SELECT json_build_object(
        'queues', {_rows(QUEUE_COUNTS)},
        'oldest_ready', {_rows(OLDEST_READY)},
        'running', {_rows(RUNNING)},
        'workers', {_rows(WORKERS)},
        'schedules', {_rows(SCHEDULES)},
        'disabled_schedules', {_rows(DISABLED_SCHEDULES)},
        'finished', {_rows(FINISHED)},
        'throughput', {_rows(THROUGHPUT)},
        'errors', {_rows(FREQUENT_ERRORS)},
        'flow_keys', {_rows(BUSY_KEYS.replace("%(limit)s", "%(flow_key_limit)s"))},
        'estimated_rows', ({ESTIMATED_ROWS})
    )::text
"""
"""Every part above as one JSON object, in one statement: one MVCC snapshot of all three
tables, so the parts agree with each other (a task moving from running to finished is
counted in exactly one of them). Read as text and decoded by :func:`read_snapshot`.
"""


@dataclass(frozen=True)
class QueueCount:
    """Unfinished tasks of one queue, status and priority (``ready``: pending and due)."""

    queue: str
    status: str
    priority: int
    count: int
    ready: int

    @property
    def scheduled(self) -> int:
        """Pending tasks due later."""
        return self.count - self.ready if self.status == "pending" else 0


@dataclass(frozen=True)
class RunningTask:
    """A running task: who holds it, which attempt, and for how many seconds."""

    id: int
    name: str
    queue: str
    worker_id: str | None
    attempt: int
    running_for: float
    #: What the task last reported with pq.set_progress(), as the row holds it (text).
    progress_done: str | None = None
    progress_total: str | None = None


@dataclass(frozen=True)
class WorkerSeen:
    """A worker holding a live lease; ages in seconds, ``running`` its tasks now."""

    id: str
    hostname: str
    pid: int
    concurrency: int
    queues: tuple[str, ...]
    heartbeat_age: float
    up_for: float
    running: int


@dataclass(frozen=True)
class ScheduleDue:
    """An active schedule: ``every`` is its interval or cron, ``due_in`` seconds from now."""

    name: str
    key: str
    every: str
    next_run: datetime
    due_in: float


@dataclass(frozen=True)
class ScheduleDisabled:
    """A schedule a worker disabled: ``error`` says why; resuming it clears that."""

    name: str
    key: str
    error: str
    disabled_at: datetime


@dataclass(frozen=True)
class Finished:
    """The window's runs of one function that ended with one status.

    ``timed`` of them have a start time and a run time, ``seconds`` in total; ``buckets``
    counts them cumulatively for each of :attr:`Snapshot.buckets` (run time <= the bound).
    """

    name: str
    status: str
    count: int
    timed: int
    seconds: float
    buckets: tuple[int, ...]


@dataclass(frozen=True)
class QueueOutcome:
    """How many of the window's runs in one queue ended with one status."""

    queue: str
    status: str
    count: int


@dataclass(frozen=True)
class QueueCounts:
    """Tasks of one queue by state; the finished ones only within the window."""

    queue: str
    ready: int = 0
    scheduled: int = 0
    running: int = 0
    blocked: int = 0  # waiting for other tasks to end
    completed: int = 0
    failed: int = 0
    cancelled: int = 0


@dataclass(frozen=True)
class Minute:
    """Tasks that finished within one minute."""

    start: datetime
    completed: int
    failed: int


@dataclass(frozen=True)
class FrequentError:
    """One kind of failure: a task name, an error code and the error's summary line."""

    name: str
    error_code: str
    summary: str
    count: int
    latest_id: int
    latest_at: datetime


@dataclass(frozen=True)
class Snapshot:
    """The queue's state at one moment, as :data:`SNAPSHOT` read it.

    ``window`` is the seconds of finished history behind ``finished``, ``outcomes`` and
    ``errors``; ``buckets`` the histogram bounds of ``finished``. Lists a caller did not
    ask for (a limit of 0) are empty.
    """

    queues: tuple[QueueCount, ...]
    oldest_ready_age: dict[str, float]
    running: tuple[RunningTask, ...]
    workers: tuple[WorkerSeen, ...]
    schedules: tuple[ScheduleDue, ...]
    disabled_schedules: tuple[ScheduleDisabled, ...]
    finished: tuple[Finished, ...]
    outcomes: tuple[QueueOutcome, ...]
    throughput: tuple[Minute, ...]
    errors: tuple[FrequentError, ...]
    flow_keys: tuple[KeyNumbers, ...]
    estimated_rows: int
    window: float
    buckets: tuple[float, ...]

    @property
    def has_live_worker(self) -> bool:
        """Whether any worker holds a live lease (without one, nothing runs)."""
        return bool(self.workers)

    def per_queue(self) -> list[QueueCounts]:
        """Each queue's ready, scheduled, running and (in the window) finished tasks."""
        cells: dict[str, dict[str, int]] = {}
        for count in self.queues:
            queue = cells.setdefault(count.queue, {})
            if count.status == "pending":
                queue["ready"] = queue.get("ready", 0) + count.ready
                queue["scheduled"] = queue.get("scheduled", 0) + count.scheduled
            else:
                queue[count.status] = queue.get(count.status, 0) + count.count
        for outcome in self.outcomes:
            cells.setdefault(outcome.queue, {})[outcome.status] = outcome.count
        return [QueueCounts(queue, **cells[queue]) for queue in sorted(cells)]


def read_snapshot(
    *,
    window: float = 3600.0,
    buckets: Sequence[float] = (),
    running_limit: int = 0,
    schedule_limit: int = 0,
    error_limit: int = 0,
    chart_minutes: int = 0,
    flow_key_limit: int = 0,
    using: str | None = None,
) -> Snapshot:
    """Read the queue's state from ``PQ_DATABASE`` (or ``using``) in one statement.

    The queue counts, oldest ready ages, live workers, the table's size and the window's
    outcomes are always read. The lists are read up to their limits: ``running_limit``
    running tasks, ``schedule_limit`` schedules due next and as many disabled ones,
    ``error_limit`` frequent errors, ``chart_minutes`` minutes of throughput,
    ``flow_key_limit`` flow keys with work (most waiting first). ``window``
    is in seconds; ``buckets`` (ascending) are the run-time histogram's bounds.
    """
    bounds = tuple(float(le) for le in buckets)
    params: dict[str, Any] = {
        "window": float(window),
        "negated_buckets": sorted(-le for le in bounds),
        "running_limit": running_limit,
        "schedule_limit": schedule_limit,
        "error_limit": error_limit,
        "flow_key_limit": flow_key_limit,
        "chart_minutes": chart_minutes,
    }
    with connections[using or pq_settings.DATABASE].cursor() as cursor:
        cursor.execute(SNAPSHOT, params)
        (text,) = cursor.fetchone()
    return _decode(json.loads(text), float(window), bounds)


def _decode(data: dict[str, Any], window: float, buckets: tuple[float, ...]) -> Snapshot:
    """The :class:`Snapshot` of :data:`SNAPSHOT`'s JSON (ages as floats, times as datetimes)."""
    moment = datetime.fromisoformat
    return Snapshot(
        queues=tuple(QueueCount(**row) for row in data["queues"]),
        oldest_ready_age={row["queue"]: float(row["age"]) for row in data["oldest_ready"]},
        running=tuple(
            RunningTask(**{**row, "running_for": float(row["running_for"])})
            for row in data["running"]
        ),
        workers=tuple(
            WorkerSeen(
                **{
                    **row,
                    "queues": _queue_names(row["queues"]),
                    "heartbeat_age": float(row["heartbeat_age"]),
                    "up_for": float(row["up_for"]),
                }
            )
            for row in data["workers"]
        ),
        schedules=tuple(
            ScheduleDue(
                **{**row, "next_run": moment(row["next_run"]), "due_in": float(row["due_in"])}
            )
            for row in data["schedules"]
        ),
        disabled_schedules=tuple(
            ScheduleDisabled(**{**row, "disabled_at": moment(row["disabled_at"])})
            for row in data["disabled_schedules"]
        ),
        finished=tuple(
            _histograms((row for row in data["finished"] if row["name"] is not None), len(buckets))
        ),
        outcomes=tuple(
            QueueOutcome(row["queue"], row["status"], row["count"])
            for row in data["finished"]
            if row["name"] is None
        ),
        throughput=tuple(
            Minute(**{**row, "start": moment(row["start"])}) for row in data["throughput"]
        ),
        errors=tuple(
            FrequentError(**{**row, "latest_at": moment(row["latest_at"])})
            for row in data["errors"]
        ),
        flow_keys=tuple(KeyNumbers(**row) for row in data["flow_keys"]),
        estimated_rows=int(data["estimated_rows"]),
        window=window,
        buckets=buckets,
    )


def _histograms(rows: Iterable[dict[str, Any]], bounds: int) -> Iterable[Finished]:
    """Fold :data:`FINISHED`'s rows by function (one per bucket) into one :class:`Finished` each."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["name"], row["status"]), []).append(row)
    for (name, status), parts in groups.items():
        timed_in = [0] * (bounds + 1)  # the last: above every bound, counted in +Inf only
        for part in parts:
            if part["timed"]:
                timed_in[part["bucket"]] += part["timed"]
        yield Finished(
            name,
            status,
            count=sum(part["count"] for part in parts),
            timed=sum(timed_in),
            seconds=sum(float(part["seconds"]) for part in parts),
            buckets=tuple(accumulate(timed_in))[:bounds],
        )


def _queue_names(value: Any) -> tuple[str, ...]:
    """A worker's queues (jsonb: a list of names as our worker writes it, else none)."""
    return tuple(str(name) for name in value) if isinstance(value, list) else ()
