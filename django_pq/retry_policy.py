"""Retry policies that know how a task died: ``pq.Retry``, and ``pq.RetryLater`` for a
task that asks to run again later.

A policy is validated here, once, and travels with the task as JSON (the ``retry_policy``
column). The worker never imports anything to apply it: the statement that records a
run's end reads the policy from the row, under the row's lock, and decides there whether
the task goes back to pending and when (``store.worker``). So a worker that was killed,
reaped by another worker on another machine, decides exactly as the one that ran it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

from django_pq.exceptions import TaskRefused
from django_pq.timing import MAX_INTEGER

__all__ = ["WAYS_OF_DYING", "Retry", "RetryLater"]

#: The error codes a run can end with that a policy may retry: the ways a task dies.
#: (``unknown_task``, ``bad_payload`` and ``cancelled`` would end the same way again.)
WAYS_OF_DYING = (
    "exception",
    "soft_timeout",
    "timeout",
    "memory",
    "signal",
    "worker_lost",
    "shutdown",
)

#: Retries after these deaths are capped at this many unless ``limits`` says otherwise:
#: a task that keeps crashing its process or exhausting memory is a poison task, and
#: must not crash-loop workers through a generous ``max_attempts``.
CRASH_LIMIT = 2
_CRASHES = ("memory", "signal")

#: At most this many delays are precomputed from a callable ``delay``.
_MAX_TABLE = 1000
#: The longest delay a policy may state: a day short of the timestamp range is plenty.
_LONGEST_DELAY = 10 * 365 * 24 * 3600.0


def _seconds(option: str, value: Any, *, owner: str = "Retry") -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds < 0
        or seconds > _LONGEST_DELAY
    ):
        raise TaskRefused(
            f"{owner}({option}=...) must be a number of seconds >= 0 and at most "
            f"{_LONGEST_DELAY:.0f} (ten years), or a timedelta; got {value!r}."
        )
    return float(seconds)


def _ways(option: str, ways: Iterable[str]) -> list[str]:
    if isinstance(ways, str):
        ways = [ways]
    chosen = []
    for way in ways:
        if way not in WAYS_OF_DYING:
            raise TaskRefused(
                f"Retry({option}=...) names {way!r}, which is not a way a task can die; "
                f"use any of {', '.join(WAYS_OF_DYING)}."
            )
        chosen.append(str(way))
    return chosen


def _exception_names(option: str, classes: Any) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, type):
        classes = [classes]
    names = []
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise TaskRefused(
                f"Retry({option}=...) must list exception classes; {cls!r} is not one."
            )
        names.append(exception_name(cls))
    return names


def exception_name(cls: type[BaseException]) -> str:
    """How a policy and a run's report name an exception class: ``module.QualName``."""
    return f"{cls.__module__}.{cls.__qualname__}"


class Retry:
    """Which ways of dying retry a task, how many times, and after what delay.

    ``Retry(5)`` allows five runs, retrying after any way of dying with exponential backoff
    (1 s, 2 s, 4 s, ... capped at an hour, ±10% jitter); a task that crashed by a signal
    or ran out of memory is retried at most twice whatever remains. Narrow it:

    - ``on``: the ways of dying that may retry (``"exception"``, ``"timeout"``,
      ``"memory"``, ``"signal"``, ``"worker_lost"``, ``"shutdown"``);
    - ``exceptions`` / ``ignore``: exception classes that retry (only those, subclasses
      included) or that never do; ``ignore`` wins;
    - ``limits``: retries allowed per way of dying, such as ``{"memory": 1}``;
    - ``delay``, ``factor``, ``max_delay``, ``jitter``: the n-th retry waits
      ``min(max_delay, delay * factor ** (n - 1))``, moved by up to ``jitter`` of itself
      either way. ``delay`` may be a callable ``attempt -> seconds`` instead (evaluated
      when the task is enqueued, for each attempt it may have).
    """

    def __init__(
        self,
        max_attempts: int,
        *,
        on: Iterable[str] = WAYS_OF_DYING,
        exceptions: Any = None,
        ignore: Any = (),
        limits: Mapping[str, int] | None = None,
        delay: float | timedelta | Callable[[int], float | timedelta] = 1.0,
        factor: float = 2.0,
        max_delay: float | timedelta = 3600.0,
        jitter: float = 0.1,
    ) -> None:
        if (
            isinstance(max_attempts, bool)
            or not isinstance(max_attempts, int)
            or not 1 <= max_attempts <= MAX_INTEGER
        ):
            raise TaskRefused(
                f"Retry(max_attempts) must be an integer >= 1 and <= {MAX_INTEGER} (the runs "
                f"a task may have, the first included); got {max_attempts!r}."
            )
        self.max_attempts = max_attempts
        self.on = _ways("on", on)
        self.exceptions = _exception_names("exceptions", exceptions)
        self.ignore = _exception_names("ignore", ignore) or []
        self.limits = {way: CRASH_LIMIT for way in _CRASHES}
        for way, limit in dict(limits or {}).items():
            _ways("limits", [way])
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise TaskRefused(
                    f"Retry(limits={{{way!r}: ...}}) must be a number of retries >= 0; "
                    f"got {limit!r}."
                )
            self.limits[way] = min(limit, MAX_INTEGER)
        self.delay = delay if callable(delay) else _seconds("delay", delay)
        if (
            isinstance(factor, bool)
            or not isinstance(factor, int | float)
            or not math.isfinite(factor)
            or not 1 <= factor <= 100
        ):
            raise TaskRefused(f"Retry(factor=...) must be a number from 1 to 100; got {factor!r}.")
        self.factor = float(factor)
        self.max_delay = _seconds("max_delay", max_delay)
        if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter <= 1:
            raise TaskRefused(
                f"Retry(jitter=...) must be a fraction from 0 to 1 of each delay; got {jitter!r}."
            )
        self.jitter = float(jitter)
        self._delays = self._table() if callable(self.delay) else None

    def _table(self) -> list[float]:
        """A callable delay, asked once per retry the task may get."""
        assert callable(self.delay)
        table = []
        for attempt in range(1, min(self.max_attempts, _MAX_TABLE + 1)):
            try:
                value = self.delay(attempt)
            except Exception as error:
                raise TaskRefused(
                    f"Retry(delay=...) raised for attempt {attempt}: "
                    f"{type(error).__name__}: {error}"
                ) from error
            table.append(_seconds(f"delay (returned for attempt {attempt})", value))
        return table

    def as_json(self) -> dict[str, Any]:
        """The policy as the row stores it (read by the finish statement)."""
        policy: dict[str, Any] = {
            "on": self.on,
            "ignore": self.ignore,
            "limits": self.limits,
            "factor": self.factor,
            "max_delay": self.max_delay,
            "jitter": self.jitter,
        }
        if self.exceptions is not None:
            policy["exceptions"] = self.exceptions
        if self._delays is not None:
            policy["delays"] = self._delays
        else:
            policy["delay"] = self.delay
        return policy

    def __repr__(self) -> str:
        return f"Retry({self.max_attempts}, {self.as_json()!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Retry):
            return NotImplemented
        return (self.max_attempts, self.as_json()) == (other.max_attempts, other.as_json())

    __hash__ = None  # type: ignore[assignment]


class RetryLater(Exception):
    """Raised by a running task to run again after ``delay`` (seconds or a timedelta).

    It counts as an attempt unless ``count_attempt=False``. Past the task's
    ``max_attempts`` the task fails with error code ``retry_refused`` instead. Raised
    outside a running task, it is refused with :class:`TaskRefused`.
    """

    def __init__(
        self, delay: float | timedelta = 0, reason: str = "", *, count_attempt: bool = True
    ) -> None:
        from django_pq.context import running_task

        if running_task() is None:
            raise TaskRefused(
                "pq.RetryLater can only be raised inside a running task (a worker's child or "
                "django_pq.testing's runner); outside one there is nothing to retry."
            )
        self.delay = _seconds("delay", delay, owner="pq.RetryLater")
        self.reason = str(reason)
        self.count_attempt = bool(count_attempt)
        super().__init__(f"Retry in {self.delay:g} s" + (f": {reason}" if reason else ""))
