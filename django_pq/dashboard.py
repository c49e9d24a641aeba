"""The numbers behind the admin overview, taken from one :class:`~django_pq.store.reads.Snapshot`.

The snapshot (:mod:`django_pq.store.reads`) is one statement answered from indexes: on a
table of millions of finished rows nothing scans the table, finished rows are read only
within :data:`RECENT`, and the table's size comes from the planner's statistics.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django_pq.store.reads import FrequentError, Minute, QueueCounts, Snapshot, read_snapshot

__all__ = [
    "CHART_MINUTES",
    "ERRORS_SHOWN",
    "RECENT",
    "FrequentError",
    "Minute",
    "Overview",
    "QueueCounts",
    "overview",
]

#: How far back the finished counts and the frequent errors look. A busy queue finishes a
#: million tasks a day; an hour keeps these reads proportional to recent work, not history.
RECENT = dt.timedelta(hours=1)
#: Minutes in the throughput chart.
CHART_MINUTES = 60
#: Kinds of failure listed.
ERRORS_SHOWN = 10


@dataclass(frozen=True)
class Overview:
    """Everything the overview page shows, from one snapshot."""

    snapshot: Snapshot
    queues: list[QueueCounts] = field(init=False)
    totals: QueueCounts = field(init=False)

    def __post_init__(self) -> None:
        queues = self.snapshot.per_queue()
        sums = {
            name: sum(getattr(counts, name) for counts in queues)
            for name in (
                "ready",
                "scheduled",
                "running",
                "blocked",
                "completed",
                "failed",
                "cancelled",
            )
        }
        object.__setattr__(self, "queues", queues)
        object.__setattr__(self, "totals", QueueCounts(queue="all queues", **sums))

    @property
    def oldest_ready_age(self) -> dt.timedelta | None:
        """How long the longest-waiting ready task has waited; None when nothing is ready."""
        ages = self.snapshot.oldest_ready_age.values()
        return dt.timedelta(seconds=max(ages)) if ages else None

    @property
    def throughput(self) -> tuple[Minute, ...]:
        """Completed and failed tasks per minute over the last :data:`CHART_MINUTES`."""
        return self.snapshot.throughput

    @property
    def errors(self) -> tuple[FrequentError, ...]:
        """The most frequent failures within :data:`RECENT`."""
        return self.snapshot.errors

    @property
    def estimated_rows(self) -> int:
        """The size of ``pq_tasks`` by the planner's statistics."""
        return self.snapshot.estimated_rows


def overview() -> Overview:
    """Read everything the overview page shows (one statement)."""
    return Overview(
        read_snapshot(
            window=RECENT.total_seconds(), error_limit=ERRORS_SHOWN, chart_minutes=CHART_MINUTES
        )
    )
