"""django-pq's task functions for the benchmark (its app is installed, so workers may run them)."""

from common import record_start as _record_start

import django_pq as pq


def noop() -> None:
    """Does nothing: what is left is the cost of the queue and the fork."""


def record_start(path: str, sample: int) -> None:
    """Writes its start time for the latency workload."""
    _record_start(path, sample)


@pq.task(queue="bench", retry=pq.Retry(3, on=["exception", "worker_lost"]))
def declared_noop() -> None:
    """``noop`` declared with ``@pq.task`` and a retry policy: what declaring costs."""
