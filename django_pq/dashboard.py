"""The numbers behind the admin overview, each read through an index.

On a table of millions of finished rows nothing here scans the table: pending and running
rows are read through their partial indexes (pq_tasks_claim, pq_tasks_running), finished
ones only within a recent window through pq_tasks_finished, and the table's size comes
from the planner's statistics (``pg_class.reltuples``) rather than ``COUNT(*)``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.db import connections

from django_pq.conf import pq_settings

#: How far back the finished counts and the frequent errors look. A busy queue finishes a
#: million tasks a day; an hour keeps these reads proportional to recent work, not history.
RECENT = dt.timedelta(hours=1)
#: Minutes in the throughput chart.
CHART_MINUTES = 60


@dataclass(frozen=True)
class QueueCounts:
    """Tasks of one queue by state; the finished ones only within :data:`RECENT`."""

    queue: str
    ready: int = 0
    scheduled: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0


@dataclass(frozen=True)
class Minute:
    """Tasks that finished within one minute."""

    start: dt.datetime
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
    latest_at: dt.datetime


@dataclass(frozen=True)
class Overview:
    """Everything the overview page shows, read at one moment."""

    queues: list[QueueCounts]
    oldest_ready_age: dt.timedelta | None
    throughput: list[Minute]
    errors: list[FrequentError]
    estimated_rows: int
    totals: QueueCounts = field(init=False)

    def __post_init__(self) -> None:
        sums = {
            name: sum(getattr(counts, name) for counts in self.queues)
            for name in ("ready", "scheduled", "running", "completed", "failed", "cancelled")
        }
        object.__setattr__(self, "totals", QueueCounts(queue="all queues", **sums))


_COUNTS = """
    SELECT queue,
        count(*) FILTER (WHERE state = 'ready'),
        count(*) FILTER (WHERE state = 'scheduled'),
        count(*) FILTER (WHERE state = 'running'),
        count(*) FILTER (WHERE state = 'completed'),
        count(*) FILTER (WHERE state = 'failed'),
        count(*) FILTER (WHERE state = 'cancelled')
    FROM (
        SELECT queue, CASE WHEN run_at <= now() THEN 'ready' ELSE 'scheduled' END AS state
        FROM pq_tasks WHERE status = 'pending'
        UNION ALL
        SELECT queue, 'running' FROM pq_tasks WHERE status = 'running'
        UNION ALL
        SELECT queue, status FROM pq_tasks
        WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at >= now() - %s
    ) AS t
    GROUP BY queue
    ORDER BY queue
"""

_OLDEST_READY = """
    SELECT now() - min(run_at) FROM pq_tasks WHERE status = 'pending' AND run_at <= now()
"""

# One range scan of the finished index grouped by minute, then joined onto every minute of
# the window so quiet minutes show as zero.
_THROUGHPUT = """
    WITH per_minute AS (
        SELECT date_trunc('minute', finished_at) AS start,
            count(*) FILTER (WHERE status = 'completed') AS completed,
            count(*) FILTER (WHERE status = 'failed') AS failed
        FROM pq_tasks
        WHERE status IN ('completed', 'failed', 'cancelled')
            AND finished_at >= date_trunc('minute', now()) - (%(minutes)s - 1) * interval '1 minute'
        GROUP BY 1
    )
    SELECT m.start, coalesce(p.completed, 0), coalesce(p.failed, 0)
    FROM generate_series(
        date_trunc('minute', now()) - (%(minutes)s - 1) * interval '1 minute',
        date_trunc('minute', now()),
        interval '1 minute'
    ) AS m(start)
    LEFT JOIN per_minute p ON p.start = m.start
    ORDER BY m.start
"""

# A traceback's telling line is its last ("ValueError: ..."); other errors lead with it.
_ERRORS = """
    SELECT name, error_code, summary, count(*), max(id), max(finished_at)
    FROM (
        SELECT id, name, error_code, finished_at, left(
            CASE WHEN error LIKE 'Traceback%%'
                THEN (regexp_match(rtrim(error, E' \\n'), '[^\\n]*$'))[1]
                ELSE split_part(error, E'\\n', 1)
            END, 300) AS summary
        FROM pq_tasks
        WHERE status = 'failed' AND finished_at >= now() - %s
    ) AS failures
    GROUP BY name, error_code, summary
    ORDER BY count(*) DESC, max(id) DESC
    LIMIT %s
"""

_ESTIMATED_ROWS = (
    "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'pq_tasks'::regclass"
)


def _rows(sql: str, params: list[Any] | dict[str, Any]) -> list[tuple[Any, ...]]:
    with connections[pq_settings.DATABASE].cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def queue_counts(recent: dt.timedelta = RECENT) -> list[QueueCounts]:
    """Counts by queue and state: unfinished all, finished within ``recent``."""
    return [QueueCounts(*row) for row in _rows(_COUNTS, [recent])]


def oldest_ready_age() -> dt.timedelta | None:
    """How long the longest-waiting ready task has waited; None when nothing is ready."""
    age: dt.timedelta | None = _rows(_OLDEST_READY, [])[0][0]
    return age


def throughput(minutes: int = CHART_MINUTES) -> list[Minute]:
    """Completed and failed tasks per minute over the last ``minutes``, oldest first."""
    return [Minute(*row) for row in _rows(_THROUGHPUT, {"minutes": minutes})]


def frequent_errors(recent: dt.timedelta = RECENT, limit: int = 10) -> list[FrequentError]:
    """The most frequent failures within ``recent``, grouped by task, code and summary."""
    return [FrequentError(*row) for row in _rows(_ERRORS, [recent, limit])]


def estimated_rows() -> int:
    """The size of ``pq_tasks`` by the planner's statistics (as of the last ANALYZE)."""
    return int(_rows(_ESTIMATED_ROWS, [])[0][0])


def overview() -> Overview:
    """Read everything the overview page shows (five queries)."""
    return Overview(
        queues=queue_counts(),
        oldest_ready_age=oldest_ready_age(),
        throughput=throughput(),
        errors=frequent_errors(),
        estimated_rows=estimated_rows(),
    )
