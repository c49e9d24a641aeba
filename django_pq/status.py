"""What ``pq_status`` reads and prints as JSON: the queue's :class:`Snapshot`.

The snapshot and its statement live in :mod:`django_pq.store.reads`; this module says
which parts of it ``pq_status`` shows (the last hour of outcomes, so many running tasks
and schedules) and how its ``--json`` output is shaped.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django_pq.store.reads import (
    QueueCount,
    RunningTask,
    ScheduleDisabled,
    ScheduleDue,
    Snapshot,
    WorkerSeen,
    read_snapshot,
)

__all__ = [
    "DURATION_WINDOW",
    "QueueCount",
    "RunningTask",
    "ScheduleDisabled",
    "ScheduleDue",
    "Snapshot",
    "WorkerSeen",
    "as_json",
    "progress_fraction",
    "snapshot",
]


def progress_fraction(done: Any, total: Any) -> str:
    """ "37/100 (37%)", "37", or "-": a task's progress, from the values the row holds."""
    if done in (None, ""):
        return "-"
    if total in (None, ""):
        return str(done)[:40]
    try:
        share = f" ({float(done) / float(total):.0%})" if float(total) > 0 else ""
    except (TypeError, ValueError, OverflowError):
        share = ""
    return f"{str(done)[:40]}/{str(total)[:40]}{share}"


#: Seconds of finished history the duration and outcome figures look back over.
DURATION_WINDOW = 3600.0


#: Flow keys ``pq_status`` (and a Prometheus scrape) lists: the busiest.
FLOW_KEYS_SHOWN = 50


def snapshot(
    *, running_limit: int = 50, schedule_limit: int = 10, using: str | None = None
) -> Snapshot:
    """Read what ``pq_status`` shows from ``PQ_DATABASE`` (one indexed statement)."""
    return read_snapshot(
        window=DURATION_WINDOW,
        running_limit=running_limit,
        schedule_limit=schedule_limit,
        flow_key_limit=FLOW_KEYS_SHOWN,
        using=using,
    )


def as_json(state: Snapshot) -> dict[str, Any]:
    """``pq_status --json``: a JSON-ready dict (datetimes as ISO 8601 text)."""
    return {
        "queues": [asdict(count) for count in state.queues],
        "oldest_ready_age": state.oldest_ready_age,
        "running": [asdict(task) for task in state.running],
        "workers": [{**asdict(w), "queues": list(w.queues)} for w in state.workers],
        "schedules": [{**asdict(s), "next_run": s.next_run.isoformat()} for s in state.schedules],
        "finished": [
            {"name": f.name, "status": f.status, "count": f.count, "seconds": f.seconds}
            for f in state.finished
        ],
        "disabled_schedules": [
            {**asdict(s), "disabled_at": s.disabled_at.isoformat()}
            for s in state.disabled_schedules
        ],
        "has_live_worker": state.has_live_worker,
        "flow_keys": [asdict(key) for key in state.flow_keys],
    }
