"""The OpenTelemetry recipe of docs/how-to/monitoring.md: one span per task, from the hooks.

In production the hooks run in the worker's forked child; here the testing helper runs the
task inline, so the span lands in this process's in-memory exporter. The receivers below
are the recipe's, word for word.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from django_pq.enqueueing import enqueue
from django_pq.testing import run_pending_tasks
from tests.testapp import tasks

trace = pytest.importorskip("opentelemetry.trace")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
export = pytest.importorskip("opentelemetry.sdk.trace.export")

pytestmark = pytest.mark.django_db

# -- the recipe ------------------------------------------------------------------------
from opentelemetry import context as otel_context  # noqa: E402
from opentelemetry import trace as otel_trace  # noqa: E402
from opentelemetry.trace import Status, StatusCode  # noqa: E402

from django_pq.signals import task_finished, task_started  # noqa: E402

_spans: dict[int, tuple[Any, object]] = {}


def start_span(sender: Any, task: Any, **kwargs: Any) -> None:
    span = otel_trace.get_tracer("django_pq").start_span(
        f"pq {task.name}",
        kind=otel_trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "django_pq",
            "messaging.destination.name": task.queue,
            "messaging.message.id": str(task.id),
            "django_pq.attempt": task.attempt,
        },
    )
    token = otel_context.attach(otel_trace.set_span_in_context(span))
    _spans[task.id] = (span, token)


def end_span(sender: Any, task: Any, status: str, error: str, **kwargs: Any) -> None:
    span, token = _spans.pop(task.id)
    if status == "failed":
        span.set_status(Status(StatusCode.ERROR, error.strip().splitlines()[-1]))
    span.end()
    otel_context.detach(token)


# -- the test ----------------------------------------------------------------------------


@pytest.fixture
def exporter() -> Iterator[Any]:
    spans = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(spans))
    tracer = provider.get_tracer("django_pq")
    task_started.connect(start_span)
    task_finished.connect(end_span)
    # The global provider can be set once per process: hand the recipe this one instead.
    original = otel_trace.get_tracer
    otel_trace.get_tracer = lambda *args, **kwargs: tracer  # type: ignore[assignment]
    try:
        yield spans
    finally:
        otel_trace.get_tracer = original
        task_started.disconnect(start_span)
        task_finished.disconnect(end_span)


def test_one_span_per_task_with_its_outcome(exporter: Any) -> None:
    ok = enqueue(tasks.add, 1, 2, queue="math")
    broken = enqueue(tasks.raise_error)
    run_pending_tasks()
    spans = {
        span.attributes["messaging.message.id"]: span for span in exporter.get_finished_spans()
    }
    assert set(spans) == {str(ok.pk), str(broken.pk)}
    assert spans[str(ok.pk)].name == "pq tests.testapp.tasks:add"
    assert spans[str(ok.pk)].attributes["messaging.destination.name"] == "math"
    assert spans[str(ok.pk)].status.status_code == trace.StatusCode.UNSET
    failed = spans[str(broken.pk)]
    assert failed.status.status_code == trace.StatusCode.ERROR
    assert failed.status.description == "ValueError: this task always fails"
    assert not _spans  # every span was ended
