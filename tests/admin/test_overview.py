"""The overview page: counts by status and queue, the oldest ready task, chart, errors."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from django_pq import dashboard
from django_pq.models import ErrorCode, Status
from tests.admin.conftest import make_task

pytestmark = pytest.mark.django_db

URL = "admin:django_pq_overview"


def failure(message: str, **fields: object) -> None:
    make_task(
        Status.FAILED,
        error=f'Traceback (most recent call last):\n  File "x.py", line 1\n{message}\n',
        error_code=ErrorCode.EXCEPTION,
        finished_at=timezone.now(),
        **fields,
    )


def test_counts_by_queue_and_state() -> None:
    now = timezone.now()
    make_task(Status.PENDING, run_at=now - dt.timedelta(hours=2))
    make_task(Status.PENDING, run_at=now + dt.timedelta(hours=2), queue="mail")
    make_task(Status.RUNNING, queue="mail")
    make_task(Status.COMPLETED, finished_at=now, queue="mail")
    make_task(Status.COMPLETED, finished_at=now - dt.timedelta(days=3))  # outside the window
    failure("ValueError: bad")

    numbers = dashboard.overview()
    counts = {row.queue: row for row in numbers.queues}
    assert counts["default"] == dashboard.QueueCounts("default", ready=1, failed=1)
    assert counts["mail"] == dashboard.QueueCounts("mail", scheduled=1, running=1, completed=1)
    assert numbers.totals == dashboard.QueueCounts(
        "all queues", ready=1, scheduled=1, running=1, completed=1, failed=1
    )
    age = numbers.oldest_ready_age
    assert age is not None and dt.timedelta(hours=2) <= age < dt.timedelta(hours=3)


def test_nothing_ready_has_no_age() -> None:
    make_task(Status.PENDING, run_at=timezone.now() + dt.timedelta(hours=1))
    assert dashboard.overview().oldest_ready_age is None


def test_throughput_per_minute_over_the_last_hour() -> None:
    now = timezone.now()
    make_task(Status.COMPLETED, finished_at=now)
    make_task(Status.COMPLETED, finished_at=now)
    failure("ValueError: x")
    make_task(Status.COMPLETED, finished_at=now - dt.timedelta(hours=2))
    minutes = dashboard.overview().throughput
    assert len(minutes) == dashboard.CHART_MINUTES
    assert (sum(m.completed for m in minutes), sum(m.failed for m in minutes)) == (2, 1)
    assert list(minutes) == sorted(minutes, key=lambda minute: minute.start)


def test_frequent_errors_group_by_the_telling_line() -> None:
    for _ in range(3):
        failure("ConnectionError: smtp down", name="tests.testapp.tasks:log_run")
    failure("ValueError: bad input")
    make_task(
        Status.FAILED,
        error="Cancelled\nmore",
        error_code=ErrorCode.WORKER_LOST,
        finished_at=timezone.now(),
    )
    errors = dashboard.overview().errors
    assert [(e.summary, e.count) for e in errors] == [
        ("ConnectionError: smtp down", 3),
        ("Cancelled", 1),
        ("ValueError: bad input", 1),
    ]
    assert errors[0].name == "tests.testapp.tasks:log_run"


def test_the_page_shows_it_all(admin_client: Client) -> None:
    make_task(Status.PENDING, run_at=timezone.now() - dt.timedelta(hours=2), queue="mail")
    failure("RuntimeError: <b>markup</b> stays text")
    response = admin_client.get(reverse(URL))
    assert response.status_code == 200
    html = response.content.decode()
    assert '<svg class="pq-chart"' in html
    assert "RuntimeError: &lt;b&gt;markup&lt;/b&gt; stays text" in html
    assert "?queue=mail" in html
    # Measured by the database clock, a moment behind this one inside the test transaction.
    assert re.search(r"(1 h 59|2 h 00) min", html)


def test_the_app_index_and_task_list_link_the_overview(admin_client: Client) -> None:
    url = reverse(URL)
    assert url in admin_client.get(reverse("admin:app_list", args=["django_pq"])).content.decode()
    assert url in admin_client.get(reverse("admin:django_pq_task_changelist")).content.decode()
