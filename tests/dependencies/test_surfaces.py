"""Blocked tasks where operators look: pq_status (text and JSON), the Prometheus view, the
admin overview's counts, the django.tasks result status."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import RequestFactory

import django_pq as pq
from django_pq.dashboard import Overview
from django_pq.store.reads import read_snapshot
from tests.testapp import tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_blocked() -> None:
    first = pq.enqueue(tasks.noop, queue="mail")
    pq.chain(pq.prepare(tasks.noop, queue="mail", after=[first]), pq.prepare(tasks.noop))


def test_pq_status_counts_blocked_tasks(two_blocked: None) -> None:
    out = StringIO()
    with pytest.raises(SystemExit):  # no live worker
        call_command("pq_status", stdout=out)
    header, *rows = [line.split() for line in out.getvalue().splitlines()[1:4]]
    assert header[:6] == ["queue", "ready", "scheduled", "running", "blocked", "oldest"]
    by_queue = {row[0]: row for row in rows}
    assert by_queue["default"][4] == "1" and by_queue["mail"][4] == "1"
    assert by_queue["mail"][1] == "1"  # the first task, ready
    out = StringIO()
    with pytest.raises(SystemExit):
        call_command("pq_status", "--json", stdout=out)
    queues = json.loads(out.getvalue())["queues"]
    assert sorted((q["queue"], q["count"]) for q in queues if q["status"] == "blocked") == [
        ("default", 1),
        ("mail", 1),
    ]


def test_the_overview_and_prometheus_count_blocked_tasks(two_blocked: None) -> None:
    assert Overview(read_snapshot()).totals.blocked == 2
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    from django_pq.metrics import make_metrics_view

    text = make_metrics_view()(RequestFactory().get("/metrics")).content.decode()
    blocked = {
        sample.labels["queue"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "pq_tasks" and sample.labels.get("state") == "blocked"
    }
    assert blocked == {"mail": 1.0, "default": 1.0}
