"""What the queue looks like right now: the queries behind ``pq_status`` and the metrics view.

Each query is written to be answered from an index (the partial claim index for pending
rows, the running and finished indexes for the rest), so reading the status of a table of
millions of finished rows costs about as much as reading an empty one. Ages and times come
from the database clock, as the worker's decisions do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from django.db import connections

from django_pq.conf import pq_settings

__all__ = [
    "DURATION_WINDOW",
    "QueueCount",
    "RunningTask",
    "ScheduleDisabled",
    "ScheduleDue",
    "Snapshot",
    "WorkerSeen",
    "snapshot",
]

#: Seconds of finished history the duration and outcome figures look back over.
DURATION_WINDOW = 3600.0

# Unfinished rows only, one branch per status so each is answered from its partial index
# (the claim index for pending rows, pq_tasks_running for running ones).
QUEUE_COUNTS = """
    SELECT queue, 'pending', priority, count(*), count(*) FILTER (WHERE run_at <= now())
    FROM pq_tasks WHERE status = 'pending'
    GROUP BY queue, priority
    UNION ALL
    SELECT queue, 'running', priority, count(*), 0
    FROM pq_tasks WHERE status = 'running'
    GROUP BY queue, priority
    ORDER BY 1, 2, 3 DESC
"""

OLDEST_READY = """
    SELECT queue, extract(epoch FROM now() - min(run_at))
    FROM pq_tasks WHERE status = 'pending' AND run_at <= now()
    GROUP BY queue ORDER BY queue
"""

RUNNING = """
    SELECT id, name, queue, worker_id::text, attempts, extract(epoch FROM now() - started_at)
    FROM pq_tasks WHERE status = 'running'
    ORDER BY started_at, id LIMIT %(limit)s
"""

WORKERS = """
    SELECT id::text, hostname, pid, concurrency, queues,
           extract(epoch FROM now() - heartbeat_at), extract(epoch FROM now() - started_at),
           (SELECT count(*) FROM pq_tasks t WHERE t.status = 'running' AND t.worker_id = w.id)
    FROM pq_workers w
    WHERE stopped_at IS NULL AND lease_expires_at > now()
    ORDER BY hostname, pid
"""

SCHEDULES = """
    SELECT name, key, coalesce(cron, run_every::text), next_run,
           extract(epoch FROM next_run - now())
    FROM pq_periodic WHERE active AND isfinite(next_run)
    ORDER BY next_run LIMIT %(limit)s
"""

# Schedules a worker disabled because it could not fire them, newest first.
DISABLED_SCHEDULES = """
    SELECT name, key, error, updated_at FROM pq_periodic
    WHERE NOT active AND error <> ''
    ORDER BY updated_at DESC, id LIMIT %(limit)s
"""

# Finished in the window, by function: read through the finished index on finished_at.
FINISHED = """
    SELECT name, status, count(*),
           sum(extract(epoch FROM finished_at - started_at))
               FILTER (WHERE started_at IS NOT NULL)
    FROM pq_tasks
    WHERE status IN ('completed', 'failed', 'cancelled')
      AND finished_at > now() - make_interval(secs => %(window)s)
    GROUP BY name, status ORDER BY name, status
"""


@dataclass(frozen=True)
class QueueCount:
    """Unfinished tasks of one queue, status and priority (``ready``: pending and due)."""

    queue: str
    status: str
    priority: int
    count: int
    ready: int


@dataclass(frozen=True)
class RunningTask:
    id: int
    name: str
    queue: str
    worker_id: str | None
    attempt: int
    running_for: float


@dataclass(frozen=True)
class WorkerSeen:
    id: str
    hostname: str
    pid: int
    concurrency: int
    queues: list[str]
    heartbeat_age: float
    up_for: float
    running: int


@dataclass(frozen=True)
class ScheduleDue:
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
class Snapshot:
    """Everything ``pq_status`` shows, read in one short transaction."""

    queues: list[QueueCount]
    oldest_ready_age: dict[str, float]
    running: list[RunningTask]
    workers: list[WorkerSeen]
    schedules: list[ScheduleDue]
    finished: list[tuple[str, str, int, float]] = field(default_factory=list)
    disabled_schedules: list[ScheduleDisabled] = field(default_factory=list)

    @property
    def has_live_worker(self) -> bool:
        return bool(self.workers)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO 8601 text)."""
        data = asdict(self)
        for schedule in data["schedules"]:
            schedule["next_run"] = schedule["next_run"].isoformat()
        for disabled in data["disabled_schedules"]:
            disabled["disabled_at"] = disabled["disabled_at"].isoformat()
        data["finished"] = [
            {"name": name, "status": status, "count": count, "seconds": seconds}
            for name, status, count, seconds in self.finished
        ]
        data["has_live_worker"] = self.has_live_worker
        return data


def _rows(cursor: Any, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    cursor.execute(sql, params or {})
    return list(cursor.fetchall())


def snapshot(
    *, running_limit: int = 50, schedule_limit: int = 10, using: str | None = None
) -> Snapshot:
    """Read the queue's current state from ``PQ_DATABASE`` (a few indexed queries)."""
    with connections[using or pq_settings.DATABASE].cursor() as cursor:
        queues = [
            QueueCount(queue, status, priority, int(count), int(ready))
            for queue, status, priority, count, ready in _rows(cursor, QUEUE_COUNTS)
        ]
        oldest = {queue: float(age) for queue, age in _rows(cursor, OLDEST_READY)}
        running = [
            RunningTask(id, name, queue, worker, attempts, float(age or 0))
            for id, name, queue, worker, attempts, age in _rows(
                cursor, RUNNING, {"limit": running_limit}
            )
        ]
        workers = [
            WorkerSeen(
                id, host, pid, concurrency, list(_json(queues_)), float(beat), float(up), int(n)
            )
            for id, host, pid, concurrency, queues_, beat, up, n in _rows(cursor, WORKERS)
        ]
        schedules = [
            ScheduleDue(name, key, str(every), next_run, float(due_in))
            for name, key, every, next_run, due_in in _rows(
                cursor, SCHEDULES, {"limit": schedule_limit}
            )
        ]
        finished = [
            (name, status, int(count), float(seconds or 0))
            for name, status, count, seconds in _rows(cursor, FINISHED, {"window": DURATION_WINDOW})
        ]
        disabled = [
            ScheduleDisabled(*row)
            for row in _rows(cursor, DISABLED_SCHEDULES, {"limit": schedule_limit})
        ]
    return Snapshot(queues, oldest, running, workers, schedules, finished, disabled)


def _json(value: Any) -> Any:
    import json

    # Django's raw cursor hands jsonb over as text.
    return json.loads(value) if isinstance(value, str) else value
