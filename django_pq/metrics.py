"""A Prometheus endpoint for django-pq, on the ``prometheus_client`` library (an extra).

::

    # urls.py
    from django_pq.metrics import metrics_view
    urlpatterns = [path("metrics/pq", metrics_view)]

Every scrape reads the queue's :class:`~django_pq.store.reads.Snapshot` in one indexed
statement: unfinished rows through their partial indexes, and the last ``window`` seconds
of finished rows through the finished index, so the cost follows the number of pending,
running and recently finished tasks, not the size of the table. Put the
view behind your own access control (``staff_member_required``, a private port, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from django.http import HttpRequest, HttpResponse

from django_pq.store.flow import KeyNumbers
from django_pq.store.reads import Snapshot, read_snapshot

__all__ = ["DEFAULT_BUCKETS", "PQCollector", "make_metrics_view", "metrics_view"]

#: Flow keys per scrape, the busiest first: labels per key are bounded (10,000 keys must
#: not become 30,000 series).
FLOW_KEYS_EXPORTED = 50

#: Histogram buckets for task durations, in seconds.
DEFAULT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as error:
        raise ImportError(
            "django_pq.metrics needs the prometheus_client library. Install it with "
            "pip install 'django-pq-tasks[prometheus]' (or pip install prometheus-client)."
        ) from error
    return prometheus_client


class PQCollector:
    """A ``prometheus_client`` collector that reads the queue on every scrape."""

    def __init__(
        self,
        window: float = 300.0,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        using: str | None = None,
    ) -> None:
        self.window = window
        # Each finite bound once, ascending: +Inf is always added (prometheus_client's
        # own buckets end in INF), and a repeated le is a duplicate series Prometheus
        # refuses the whole scrape for.
        self.buckets = tuple(sorted({float(le) for le in buckets if math.isfinite(le)}))
        self.using = using

    def collect(self) -> Iterator[Any]:
        """Yield the metric families (the ``prometheus_client`` collector protocol)."""
        _prometheus()
        yield from self.families(
            read_snapshot(
                window=self.window,
                buckets=self.buckets,
                flow_key_limit=FLOW_KEYS_EXPORTED,
                using=self.using,
            )
        )

    def flow_families(self, keys: Sequence[KeyNumbers]) -> Iterator[Any]:
        """The flow keys' families: tasks by state, paused or held, rate tokens spent."""
        from prometheus_client import core as metrics

        tasks = metrics.GaugeMetricFamily(
            "pq_flow_key_tasks",
            f"Tasks of the busiest {FLOW_KEYS_EXPORTED} flow keys, running or waiting.",
            labels=["key", "state"],
        )
        stopped = metrics.GaugeMetricFamily(
            "pq_flow_key_stopped",
            "1 when a flow key is paused (by staff) or held (an ordered key's failure).",
            labels=["key", "reason"],
        )
        spent = metrics.GaugeMetricFamily(
            "pq_flow_key_rate_spent",
            "Rate tokens spent of the burst, per flow key.",
            labels=["key"],
        )
        for key in keys:
            tasks.add_metric([key.key, "running"], key.running)
            tasks.add_metric([key.key, "waiting"], key.waiting)
            stopped.add_metric([key.key, "paused"], int(key.is_paused))
            stopped.add_metric([key.key, "held"], int(key.is_held))
            if key.rate_spent is not None:
                spent.add_metric([key.key], key.rate_spent)
        yield tasks
        yield stopped
        yield spent

    def families(self, state: Snapshot) -> Iterator[Any]:
        """The metric families of one snapshot (read with this collector's window and buckets)."""
        from prometheus_client import core as metrics

        tasks = metrics.GaugeMetricFamily(
            "pq_tasks",
            "Unfinished tasks by queue, state (ready, scheduled, running, blocked) and priority.",
            labels=["queue", "state", "priority"],
        )
        for group in state.queues:
            if group.status == "pending":
                tasks.add_metric([group.queue, "ready", str(group.priority)], group.ready)
                tasks.add_metric([group.queue, "scheduled", str(group.priority)], group.scheduled)
            else:
                tasks.add_metric([group.queue, group.status, str(group.priority)], group.count)
        yield tasks

        age = metrics.GaugeMetricFamily(
            "pq_oldest_ready_task_age_seconds",
            "How long the oldest ready task of each queue has waited to be claimed.",
            labels=["queue"],
        )
        for queue, seconds in state.oldest_ready_age.items():
            age.add_metric([queue], seconds)
        yield age

        outcomes = metrics.GaugeMetricFamily(
            "pq_tasks_finished_recent",
            f"Tasks finished in the last {state.window:g} seconds, by function and status.",
            labels=["task", "status"],
        )
        durations = metrics.HistogramMetricFamily(
            "pq_task_duration_seconds",
            f"Run time of the tasks finished in the last {state.window:g} seconds.",
            labels=["task", "status"],
        )
        for runs in state.finished:
            outcomes.add_metric([runs.name, runs.status], runs.count)
            buckets = [(repr(le), n) for le, n in zip(state.buckets, runs.buckets, strict=True)]
            durations.add_metric(
                [runs.name, runs.status],
                buckets=[*buckets, ("+Inf", runs.timed)],
                sum_value=runs.seconds,
            )
        yield outcomes
        yield durations

        live = metrics.GaugeMetricFamily(
            "pq_workers_live", "Workers holding a live lease.", labels=["hostname"]
        )
        slots = metrics.GaugeMetricFamily(
            "pq_worker_slots", "Task slots of the live workers, by use.", labels=["state"]
        )
        per_host: dict[str, int] = {}
        busy = total_slots = 0
        for worker in state.workers:
            per_host[worker.hostname] = per_host.get(worker.hostname, 0) + 1
            busy += worker.running
            total_slots += worker.concurrency
        for hostname, count in sorted(per_host.items()):
            live.add_metric([hostname], count)
        slots.add_metric(["busy"], busy)
        slots.add_metric(["idle"], max(total_slots - busy, 0))
        yield live
        yield slots
        yield from self.flow_families(state.flow_keys)


def make_metrics_view(
    window: float = 300.0, buckets: Sequence[float] = DEFAULT_BUCKETS, using: str | None = None
) -> Callable[[HttpRequest], HttpResponse]:
    """A Django view serving django-pq's metrics in Prometheus' text format.

    ``window``: seconds of finished history behind the outcome and duration metrics.
    """
    prometheus = _prometheus()
    registry = prometheus.CollectorRegistry(auto_describe=False)
    registry.register(PQCollector(window, buckets, using))

    def metrics(request: HttpRequest) -> HttpResponse:
        return HttpResponse(
            prometheus.generate_latest(registry), content_type=prometheus.CONTENT_TYPE_LATEST
        )

    return metrics


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The default metrics view (a 300-second window); see :func:`make_metrics_view`."""
    global _default_view
    if _default_view is None:
        _default_view = make_metrics_view()
    return _default_view(request)


_default_view: Callable[[HttpRequest], HttpResponse] | None = None
