"""A running task's view of itself: ``pq.current_task()`` and ``pq.set_progress()``.

The context is set by the process that runs the task (the worker's forked child, or
``django_pq.testing``'s runner) for the length of the run, and is a plain module global:
each child runs one task at a time, and the task's own threads and event loop see it too.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django_pq.exceptions import TaskRefused

__all__ = ["TaskContext", "current_task", "set_progress"]

#: At most one progress write per this many seconds; the last value is written when the
#: task ends, so nothing reported is lost, only intermediate values are skipped.
PROGRESS_INTERVAL = 0.5
_MESSAGE_MAX_LENGTH = 1000

#: Writes one progress value for the running task; False when it could not (yet).
ProgressWriter = Callable[[dict[str, object]], bool]


@dataclass
class TaskContext:
    """What a running task knows about its run (``pq.current_task()``)."""

    id: int
    name: str
    attempt: int
    max_attempts: int
    queue: str
    priority: int
    client_id: str | None
    periodic_id: int | None
    slot: datetime | None
    deadline: datetime | None  # when the worker stops the run (max_runtime), if ever
    _writer: ProgressWriter | None = field(default=None, repr=False)
    #: Reads a task's batch by its id (the worker's child gives it; a layer above this).
    _batch_reader: Callable[[int], Any] | None = field(default=None, repr=False)
    _written_at: float = field(default=-math.inf, repr=False)
    _unwritten: dict[str, object] | None = field(default=None, repr=False)

    @property
    def batch(self) -> Any:
        """The batch or chain this task belongs to (a member or a callback): a
        :class:`~django_pq.dependencies.BatchHandle` with its id, members, counts by
        status and results; None when it belongs to none. Read when asked."""
        return self._batch_reader(self.id) if self._batch_reader is not None else None

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    def _progress(self, value: dict[str, object]) -> None:
        now = time.monotonic()
        if now - self._written_at < PROGRESS_INTERVAL:
            self._unwritten = value
            return
        self._write(value, now)

    def _write(self, value: dict[str, object], now: float) -> None:
        self._unwritten = None
        self._written_at = now
        if self._writer is not None and self._writer(value) is False:
            self._unwritten = value  # skipped (the row was locked): the end tries again

    def _flush(self) -> None:
        if self._unwritten is not None:
            self._write(self._unwritten, time.monotonic())


_CURRENT: TaskContext | None = None


def running_task() -> TaskContext | None:
    """The context of the task this process is running, or None."""
    return _CURRENT


def current_task() -> TaskContext | None:
    """The running task's context (id, attempt and limit, queue, priority, client id,
    schedule and slot, deadline); None outside a running task."""
    return _CURRENT


@contextlib.contextmanager
def running(context: TaskContext) -> Iterator[TaskContext]:
    """Make ``context`` current for the length of a run; the last progress is written at
    its end, even when the task raised."""
    global _CURRENT
    previous, _CURRENT = _CURRENT, context
    try:
        yield context
    finally:
        _CURRENT = previous
        with contextlib.suppress(Exception):  # progress is a courtesy, never a verdict
            context._flush()


def _check_count(option: str, value: object) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TaskRefused(f"set_progress({option}=...) must be a finite number; got {value!r}.")
    if value < 0:
        raise TaskRefused(f"set_progress({option}=...) must be >= 0; got {value!r}.")
    return value


def set_progress(done: float, total: float | None = None, message: str | None = None) -> None:
    """Record how far the running task got, readable as ``Task.progress``
    (``{"done": ..., "total": ..., "message": ...}``) and shown in the admin.

    Written through a short transaction of its own (never the task's), at most twice a
    second; the last value always lands when the task ends.
    """
    context = _CURRENT
    if context is None:
        raise TaskRefused(
            "pq.set_progress() can only be called inside a running task; outside one there "
            "is no task to record progress on."
        )
    done = _check_count("done", done)
    if total is not None:
        total = _check_count("total", total)
        if done > total:
            raise TaskRefused(
                f"set_progress(done={done!r}, total={total!r}): done cannot exceed total."
            )
    if message is not None:
        if not isinstance(message, str):
            raise TaskRefused(f"set_progress(message=...) must be a string; got {message!r}.")
        message = message.replace("\x00", "")[:_MESSAGE_MAX_LENGTH]
    context._progress({"done": done, "total": total, "message": message})


def from_claim(
    claimed: Any,
    writer: ProgressWriter | None,
    batch_reader: Callable[[int], Any] | None = None,
) -> TaskContext:
    """A context for the run of ``claimed`` (the worker's ``Claimed``) that starts now."""
    now = time.time()
    slot, limit = claimed.slot, claimed.runtime_limit
    return TaskContext(
        id=claimed.id,
        name=claimed.name,
        attempt=claimed.attempts,
        max_attempts=claimed.max_attempts,
        queue=claimed.queue,
        priority=claimed.priority,
        client_id=claimed.client_id,
        periodic_id=claimed.periodic_id,
        slot=None if slot is None else datetime.fromtimestamp(slot, UTC),
        deadline=None if limit is None else datetime.fromtimestamp(now + limit, UTC),
        _writer=writer,
        _batch_reader=batch_reader,
    )
