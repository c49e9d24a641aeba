"""Task functions for the pq 0.9.1 driver (a module of their own: pq imports them by path)."""

from common import record_start as _record_start


def noop() -> None:
    """Does nothing."""


def record_start(path: str, sample: int) -> None:
    """Writes its start time for the latency workload."""
    _record_start(path, sample)
