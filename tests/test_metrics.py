"""The Prometheus view: real rows in, exposition text out; its one statement pinned."""

from __future__ import annotations

import sys
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import RequestFactory
from django.utils import timezone
from model_bakery import baker

from django_pq.metrics import make_metrics_view
from django_pq.models import Status, Task, Worker

prometheus_parser = pytest.importorskip("prometheus_client.parser")

pytestmark = pytest.mark.django_db


def scrape(view: Any = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = (view or make_metrics_view())(RequestFactory().get("/metrics"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in prometheus_parser.text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_report_depth_age_outcomes_durations_and_workers() -> None:
    now = timezone.now()
    worker = baker.make(Worker, hostname="box", pid=1, concurrency=4,
                        lease_expires_at=now + timedelta(minutes=1))  # fmt: skip
    baker.make(Task, name="app:mail", queue="mail", priority=75, _quantity=2,
               run_at=now - timedelta(seconds=60))  # fmt: skip
    baker.make(Task, name="app:mail", queue="mail", priority=75, run_at=now + timedelta(hours=1))
    baker.make(Task, name="app:report", status=Status.RUNNING, worker_id=worker.id,
               run_token=uuid.uuid4(), started_at=now)  # fmt: skip
    for seconds, outcome in ((0.03, Status.COMPLETED), (2.0, Status.COMPLETED), (7, Status.FAILED)):
        started_at = now - timedelta(seconds=seconds)
        baker.make(Task, name="app:report", status=outcome, started_at=started_at, finished_at=now)
    baker.make(Task, name="app:old", status=Status.COMPLETED, started_at=now - timedelta(hours=2),
               finished_at=now - timedelta(hours=2))  # outside the window  # fmt: skip

    samples = scrape()
    assert samples["pq_tasks", (("priority", "75"), ("queue", "mail"), ("state", "ready"))] == 2
    assert samples["pq_tasks", (("priority", "75"), ("queue", "mail"), ("state", "scheduled"))] == 1
    assert (
        samples["pq_tasks", (("priority", "50"), ("queue", "default"), ("state", "running"))] == 1
    )
    assert 55 < samples["pq_oldest_ready_task_age_seconds", (("queue", "mail"),)] < 120
    report = (("status", "completed"), ("task", "app:report"))
    assert samples["pq_tasks_finished_recent", report] == 2
    assert samples["pq_tasks_finished_recent", (("status", "failed"), ("task", "app:report"))] == 1
    assert samples["pq_task_duration_seconds_bucket", (("le", "0.05"), *report)] == 1
    assert samples["pq_task_duration_seconds_bucket", (("le", "2.5"), *report)] == 2
    assert samples["pq_task_duration_seconds_count", report] == 2
    assert samples["pq_task_duration_seconds_sum", report] == pytest.approx(2.03)
    assert not any(labels and ("task", "app:old") in labels for _, labels in samples)
    assert samples["pq_workers_live", (("hostname", "box"),)] == 1
    assert samples["pq_worker_slots", (("state", "busy"),)] == 1
    assert samples["pq_worker_slots", (("state", "idle"),)] == 3


def test_a_scrape_runs_one_statement_however_many_rows(django_assert_num_queries: Any) -> None:
    view = make_metrics_view()
    baker.make(Task, name="app:a", _quantity=20)
    baker.make(Task, name="app:b", status=Status.COMPLETED, finished_at=timezone.now(),
               started_at=timezone.now(), _quantity=20)  # fmt: skip
    with django_assert_num_queries(1):
        scrape(view)


def test_a_clear_error_without_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"pip install 'django-pq-tasks\[prometheus\]'"):
        make_metrics_view()


def test_buckets_as_prometheus_client_spells_them_give_one_series_per_bound() -> None:
    # prometheus_client's own buckets end in INF, and may repeat a bound: each le is one
    # series (a repeated one makes Prometheus refuse the whole scrape as duplicate samples).
    now = timezone.now()
    baker.make(Task, name="app:report", status=Status.COMPLETED,
               started_at=now - timedelta(seconds=0.5), finished_at=now)  # fmt: skip
    view = make_metrics_view(buckets=(1.0, 0.1, 1.0, float("inf")))
    text = view(RequestFactory().get("/metrics")).content.decode()
    bounds = [
        line.split('le="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("pq_task_duration_seconds_bucket")
    ]
    assert bounds == ["0.1", "1.0", "+Inf"]
    samples = scrape(view)
    report = (("status", "completed"), ("task", "app:report"))
    assert samples["pq_task_duration_seconds_bucket", (("le", "1.0"), *report)] == 1
    assert samples["pq_task_duration_seconds_bucket", (("le", "0.1"), *report)] == 0
