"""The worker's heartbeat statement: what it tells the worker to do next, from the rows."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from model_bakery import baker

import django_pq as pq
from django_pq.models import Periodic
from django_pq.store import worker as sql
from django_pq.store.worker import ClaimFilter
from tests.testapp import tasks

pytestmark = pytest.mark.django_db

ANY_QUEUE = ClaimFilter(queues=(), priorities=(), min_priority=None)


def heartbeat(scope: ClaimFilter = ANY_QUEUE) -> dict[str, Any]:
    """The heartbeat's answer, by name, for a worker that has no row (nothing to renew)."""
    worker = str(uuid.uuid4())
    with connection.cursor() as cursor:
        cursor.execute(
            sql.heartbeat_statement(scope),
            {"id": worker, "lease": 30, **sql.claim_params(scope, worker, 0)},
        )
        *_, to_schedule, task_ready, to_task, _db_epoch = cursor.fetchone()
    return {"to_schedule": to_schedule, "task_ready": task_ready, "to_task": to_task}


def test_with_nothing_to_do_no_timer_is_due():
    # greatest()/least() skip NULLs: unguarded, "no row" read as "due now", and each
    # heartbeat's empty answer used up a timer a NOTIFY had set for a later task.
    assert heartbeat() == {"to_schedule": None, "task_ready": False, "to_task": None}


def test_ready_work_and_the_next_future_task_are_separate_answers():
    pq.enqueue(tasks.add, 1, 1)
    pq.enqueue(tasks.add, 1, 2, run_at=dt.timedelta(seconds=30))
    pq.enqueue(tasks.add, 1, 3, run_at=dt.timedelta(seconds=90))
    answer = heartbeat()
    assert answer["task_ready"] is True
    assert 25 < answer["to_task"] <= 30


def test_only_tasks_the_worker_serves_count():
    pq.enqueue(tasks.add, 1, 1, queue="other")
    pq.enqueue(tasks.add, 1, 2, queue="other", run_at=dt.timedelta(seconds=30))
    mine = ClaimFilter(queues=("mine",), priorities=(), min_priority=None)
    assert heartbeat(mine) == {"to_schedule": None, "task_ready": False, "to_task": None}


@pytest.mark.parametrize(
    ("moment", "ready", "seconds"), [("infinity", False, 86400), ("-infinity", True, None)]
)
def test_a_task_at_the_ends_of_time_stays_in_range(moment, ready, seconds):
    with connection.cursor() as cursor:
        # Tables made by another tool (real pq's) need not have our constraints.
        cursor.execute("ALTER TABLE pq_tasks DROP CONSTRAINT pq_tasks_run_at_finite")
        task = pq.enqueue(tasks.add, 1, 1)
        cursor.execute(
            "UPDATE pq_tasks SET run_at = %s::timestamptz WHERE id = %s", [moment, task.id]
        )
    answer = heartbeat()
    assert (answer["task_ready"], answer["to_task"]) == (ready, seconds)


@pytest.mark.parametrize(
    ("next_run", "seconds"),
    [
        ("-infinity", 0),
        ("infinity", 86400),
        (timezone.now() - dt.timedelta(hours=1), 0),
    ],
    ids=["-infinity", "infinity", "overdue"],
)
def test_a_schedule_due_or_overdue_is_due_now_and_never_out_of_range(next_run, seconds):
    schedule = baker.make(Periodic, name="a:b", run_every=dt.timedelta(minutes=1), cron=None)
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE pq_periodic DROP CONSTRAINT pq_periodic_next_run_finite")
        cursor.execute(
            "UPDATE pq_periodic SET next_run = %s::timestamptz, active = true WHERE id = %s",
            [next_run, schedule.id],
        )
    assert heartbeat()["to_schedule"] == seconds


def test_a_paused_schedule_is_no_timer():
    baker.make(Periodic, name="a:b", run_every=dt.timedelta(minutes=1), cron=None, active=False)
    assert heartbeat()["to_schedule"] is None
