"""The schema states its rules: the catalog has them, and violating rows are refused."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import IntegrityError, connection, transaction
from model_bakery import baker

from django_pq.models import (
    EARLIEST_MOMENT,
    LATEST_MOMENT,
    LONGEST_INTERVAL,
    Periodic,
    Priority,
    Status,
    Task,
)

pytestmark = pytest.mark.django_db


def sql(statement: str, params: list | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])
        return cursor.fetchall() if cursor.description else []


def refused(statement: str, params: list | None = None) -> str:
    with pytest.raises(IntegrityError) as caught, transaction.atomic():
        sql(statement, params)
    return str(caught.value)


def test_migrate_creates_the_tables():
    tables = {row[0] for row in sql("SELECT tablename FROM pg_tables WHERE tablename LIKE 'pq_%%'")}
    assert tables == {
        "pq_tasks",
        "pq_periodic",
        "pq_workers",
        "pq_limits",
        "pq_flow_keys",
        "pq_dependencies",
        "pq_batches",
    }


def test_claim_index_is_partial_on_pending_and_ordered_like_the_claim():
    (definition,) = sql("SELECT indexdef FROM pg_indexes WHERE indexname = 'pq_tasks_claim_fair'")[
        0
    ]
    assert "(priority DESC, fair_rank, run_at, id)" in definition
    assert "WHERE ((status)::text = 'pending'::text)" in definition


def test_hot_table_storage_is_tuned_for_a_queue():
    (options,) = sql("SELECT reloptions FROM pg_class WHERE relname = 'pq_tasks'")[0]
    assert "autovacuum_vacuum_scale_factor=0.01" in options
    assert "fillfactor=80" in options


def refused_insert(table: str, values: dict) -> str:
    names = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    return refused(f"INSERT INTO {table} ({names}) VALUES ({marks})", list(values.values()))


def insert_task(**columns) -> str:
    values = {
        "queue": "default",
        "name": "a:b",
        "payload": "{}",
        "priority": 50,
        "status": "pending",
        "attempts": 0,
        "max_attempts": 1,
        "error": "",
        "error_code": "",
        "is_cancel_requested": False,
        **columns,
    }
    return refused_insert("pq_tasks", values)


@pytest.mark.parametrize(
    ("columns", "constraint"),
    [
        ({"priority": 101}, "pq_tasks_priority_range"),
        ({"priority": -1}, "pq_tasks_priority_range"),
        ({"status": "lost"}, "pq_tasks_status_valid"),
        ({"error_code": "oops"}, "pq_tasks_error_code_valid"),
        ({"max_attempts": 0}, "pq_tasks_max_attempts_min"),
        ({"max_runtime": 0}, "pq_tasks_max_runtime_positive"),
        ({"status": "running"}, "pq_tasks_running_has_token"),
        # Values the worker cannot act on: NaN passes "> 0" in Postgres; infinite moments
        # break every "x - now()" and cannot be loaded into a datetime.
        ({"max_runtime": float("nan")}, "pq_tasks_max_runtime_positive"),
        ({"max_runtime": float("inf")}, "pq_tasks_max_runtime_positive"),
        ({"run_at": "infinity"}, "pq_tasks_run_at_finite"),
        ({"run_at": "-infinity"}, "pq_tasks_run_at_finite"),
        ({"run_at": "10000-01-01 00:00+00"}, "pq_tasks_run_at_finite"),
        ({"created_at": "-infinity"}, "pq_tasks_created_at_finite"),
        ({"started_at": "infinity"}, "pq_tasks_started_at_finite"),
        ({"finished_at": "infinity"}, "pq_tasks_finished_at_finite"),
        ({"slot": "-infinity"}, "pq_tasks_slot_finite"),
    ],
)
def test_task_rows_breaking_a_rule_are_refused(columns, constraint):
    assert constraint in insert_task(**columns)


def test_client_id_is_unique_but_optional():
    baker.make(Task, name="a:b", client_id="x")
    baker.make(Task, name="a:b", client_id=None, _quantity=2)
    assert "client_id" in insert_task(client_id="x")


def test_one_task_per_schedule_slot():
    schedule = baker.make(Periodic, name="a:b", run_every=dt.timedelta(minutes=1), cron=None)
    slot = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    baker.make(Task, name="a:b", periodic=schedule, slot=slot)
    assert "pq_tasks_one_run_per_slot" in insert_task(periodic_id=schedule.pk, slot=slot)


def insert_periodic(**columns) -> str:
    values = {
        "name": "a:b",
        "key": "",
        "payload": "{}",
        "priority": 50,
        "queue": "default",
        "timezone": "UTC",
        "active": True,
        "skipped_runs": 0,
        "is_declared": False,
        **columns,
    }
    return refused_insert("pq_periodic", values)


@pytest.mark.parametrize(
    ("columns", "constraint"),
    [
        ({"cron": None, "run_every": None}, "pq_periodic_one_of_interval_or_cron"),
        (
            {"cron": "* * * * *", "run_every": dt.timedelta(1)},
            "pq_periodic_one_of_interval_or_cron",
        ),
        ({"run_every": dt.timedelta(0)}, "pq_periodic_interval_positive"),
        ({"run_every": dt.timedelta(1), "priority": 300}, "pq_periodic_priority_range"),
        ({"run_every": dt.timedelta(1), "max_concurrent": 0}, "pq_periodic_max_concurrent_min"),
        ({"run_every": "178000000 years"}, "pq_periodic_interval_positive"),
        ({"run_every": "3652057 days"}, "pq_periodic_interval_positive"),
        ({"run_every": dt.timedelta(1), "max_runtime": float("nan")}, "max_runtime_positive"),
        ({"run_every": dt.timedelta(1), "max_attempts": 0}, "pq_periodic_max_attempts_min"),
        ({"run_every": dt.timedelta(1), "next_run": "infinity"}, "pq_periodic_next_run_finite"),
        ({"run_every": dt.timedelta(1), "next_run": "-infinity"}, "pq_periodic_next_run_finite"),
        ({"run_every": dt.timedelta(1), "last_run": "infinity"}, "pq_periodic_last_run_finite"),
        ({"run_every": dt.timedelta(1), "updated_at": "infinity"}, "updated_at_finite"),
    ],
)
def test_periodic_rows_breaking_a_rule_are_refused(columns, constraint):
    assert constraint in insert_periodic(**columns)


def test_schedule_name_and_key_are_unique_together():
    baker.make(Periodic, name="a:b", key="", run_every=dt.timedelta(minutes=1), cron=None)
    baker.make(Periodic, name="a:b", key="other", run_every=dt.timedelta(minutes=1), cron=None)
    assert "pq_periodic_name_key" in insert_periodic(run_every=dt.timedelta(1))


def test_periodic_client_id_is_unique():
    baker.make(Periodic, name="a:b", key="1", client_id="c", run_every=dt.timedelta(1), cron=None)
    assert "client_id" in insert_periodic(key="2", client_id="c", run_every=dt.timedelta(1))


def insert_worker(**columns) -> str:
    values = {
        "id": "00000000-0000-0000-0000-000000000001",
        "hostname": "box",
        "pid": 1,
        "queues": "[]",
        "priorities": "[]",
        "concurrency": 1,
        "lease_expires_at": "2030-01-01 00:00+00",
        "version": "",
        **columns,
    }
    return refused_insert("pq_workers", values)


@pytest.mark.parametrize(
    ("columns", "constraint"),
    [
        ({"concurrency": 0}, "pq_workers_concurrency_min"),
        ({"min_priority": 101}, "pq_workers_min_priority_range"),
        ({"lease_expires_at": "infinity"}, "pq_workers_lease_expires_at_finite"),
        ({"heartbeat_at": "-infinity"}, "pq_workers_heartbeat_at_finite"),
        ({"started_at": "infinity"}, "pq_workers_started_at_finite"),
        ({"stopped_at": "infinity"}, "pq_workers_stopped_at_finite"),
    ],
)
def test_worker_rows_breaking_a_rule_are_refused(columns, constraint):
    assert constraint in insert_worker(**columns)


def test_the_edges_of_the_moment_range_are_legal():
    schedule = baker.make(Periodic, name="a:b", run_every=LONGEST_INTERVAL, cron=None)
    for moment in (EARLIEST_MOMENT, LATEST_MOMENT):
        baker.make(Task, name="a:b", run_at=moment, periodic=schedule, slot=moment)
    assert Task.objects.count() == 2


@pytest.mark.parametrize(
    ("value", "label"),
    [(0, "BATCH"), (50, "NORMAL"), (60, "NORMAL+10"), (100, "CRITICAL"), (99, "HIGH+24")],
)
def test_priority_labels(value, label):
    assert Priority.label_for(value) == label


def test_status_and_priority_values_match_pq():
    assert [p.value for p in Priority] == [0, 25, 50, 75, 100]
    # pq's five, and django-pq's own: blocked (waiting for other tasks).
    assert Status.values == ["pending", "running", "completed", "failed", "cancelled", "blocked"]
