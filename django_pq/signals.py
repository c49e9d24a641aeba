"""Lifecycle hooks, sent inside the task's forked child process.

Because they run in the child, a receiver can set up what does not survive ``fork()``
(OpenTelemetry exporters, gRPC channels, thread pools) before the task runs. A receiver
that raises is logged and noted in the task's ``error``; it never takes the worker down.

Receivers get ``sender`` (the task function) and ``task`` (a :class:`TaskRun`).
``task_finished`` also gets ``status`` (``"completed"`` or ``"failed"``), ``result`` and
``error`` (the traceback text, or ``""``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.dispatch import Signal

task_started = Signal()
task_finished = Signal()


@dataclass(frozen=True)
class TaskRun:
    """What a hook knows about the run: the row's identity and this attempt."""

    id: int
    name: str
    queue: str
    priority: int
    attempt: int
    max_attempts: int
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    client_id: str | None = None
    periodic_id: int | None = None
