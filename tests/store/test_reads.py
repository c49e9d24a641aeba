"""The read side's snapshot: one statement, consistent, indexed, rendered by every consumer."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from model_bakery import baker

from django_pq import dashboard, status
from django_pq.management.commands.pq_status import render
from django_pq.models import Status, Task, Worker
from django_pq.store import reads
from django_pq.store.reads import Finished, Snapshot, read_snapshot

WORKER = uuid.UUID("11111111-1111-1111-1111-111111111111")

#: Every part of the snapshot asked for.
EVERYTHING: dict[str, Any] = {
    "window": 3600.0,
    "buckets": (0.5, 1.0, 2.0),
    "running_limit": 50,
    "schedule_limit": 10,
    "error_limit": 10,
    "chart_minutes": 60,
}


def live_worker() -> Worker:
    return baker.make(
        Worker, id=WORKER, hostname="box", pid=1, concurrency=100,
        lease_expires_at=timezone.now() + timedelta(minutes=5),
    )  # fmt: skip


@pytest.mark.django_db
def test_the_snapshot_is_one_statement(django_assert_num_queries: Any) -> None:
    live_worker()
    baker.make(Task, name="app:a", _quantity=3)
    with django_assert_num_queries(1):
        state = read_snapshot(**EVERYTHING)
    assert sum(count.count for count in state.queues) == 3


def move_one_task_on(watcher: psycopg.Connection) -> Callable[..., Any]:
    """An execute wrapper that, before each statement, commits a task's next step elsewhere:
    the oldest running task finishes, and the oldest ready one starts on :data:`WORKER`."""

    def step(execute: Callable[..., Any], sql: str, params: Any, many: bool, ctx: Any) -> Any:
        watcher.execute(
            "UPDATE pq_tasks SET status = 'completed', finished_at = now() "
            "WHERE id = (SELECT min(id) FROM pq_tasks WHERE status = 'running')"
        )
        watcher.execute(
            "UPDATE pq_tasks SET status = 'running', started_at = now(), attempts = 1, "
            "worker_id = %s, run_token = gen_random_uuid() "
            "WHERE id = (SELECT min(id) FROM pq_tasks WHERE status = 'pending')",
            [WORKER],
        )
        return execute(sql, params, many, ctx)

    return step


@pytest.mark.django_db(transaction=True)
def test_the_parts_agree_while_tasks_move(watcher: psycopg.Connection) -> None:
    """Tasks run and finish between any two statements of the read: the counts in the
    snapshot still add up, because they are all read by the one statement."""
    live_worker()
    baker.make(Task, name="app:a", run_at=timezone.now() - timedelta(seconds=1), _quantity=10)
    for _ in range(4):
        with connection.execute_wrapper(move_one_task_on(watcher)):
            state = read_snapshot(**EVERYTHING)
        ready = sum(count.ready for count in state.queues)
        running = sum(count.count for count in state.queues if count.status == "running")
        completed = sum(outcome.count for outcome in state.outcomes)
        assert ready + running + completed == 10, state
        assert running == len(state.running) == state.workers[0].running == 1, state
        assert completed == sum(runs.count for runs in state.finished), state
        assert sum(minute.completed for minute in state.throughput) == completed, state


@pytest.mark.django_db
def test_run_times_fall_in_inclusive_buckets() -> None:
    finished_at = timezone.now()
    for seconds in (0.5, 1.0, 1.5, 3.0):
        baker.make(Task, name="app:a", status=Status.COMPLETED, finished_at=finished_at,
                   started_at=finished_at - timedelta(seconds=seconds))  # fmt: skip
    baker.make(Task, name="app:a", status=Status.COMPLETED, finished_at=finished_at)  # untimed
    state = read_snapshot(buckets=(0.5, 1.0, 2.0))
    assert state.finished == (Finished("app:a", "completed", 5, 4, 6.0, (1, 2, 3)),)
    assert read_snapshot().finished == (Finished("app:a", "completed", 5, 4, 6.0, ()),)


@pytest.mark.django_db
def test_a_list_not_asked_for_is_empty() -> None:
    live_worker()
    baker.make(Task, name="app:a", status=Status.RUNNING, worker_id=WORKER,
               run_token=uuid.uuid4(), started_at=timezone.now())  # fmt: skip
    baker.make(Task, name="app:a", status=Status.FAILED, error="ValueError: x",
               error_code="exception", finished_at=timezone.now())  # fmt: skip
    state = read_snapshot()
    assert (state.running, state.schedules, state.errors, state.throughput) == ((), (), (), ())
    assert state.workers[0].running == 1 and state.outcomes  # counted all the same
    assert len(read_snapshot(running_limit=1, error_limit=1).running) == 1


@pytest.mark.django_db
def test_the_snapshot_reads_pq_tasks_through_its_indexes() -> None:
    """With sequential scans priced out, every part must find an index that answers it."""
    sent: list[tuple[str, Any]] = []

    def keep(execute: Callable[..., Any], sql: str, params: Any, many: bool, ctx: Any) -> Any:
        sent.append((sql, params))
        return execute(sql, params, many, ctx)

    with connection.execute_wrapper(keep):
        read_snapshot(**EVERYTHING)
    [(sql, params)] = sent
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Seq Scan on pq_tasks" not in plan, plan
    for index in ("pq_tasks_claim", "pq_tasks_running", "pq_tasks_finished", "pq_periodic_due"):
        assert index in plan, plan


@pytest.fixture
def busy() -> None:
    now = timezone.now()
    live_worker()
    baker.make(Task, name="app:a", queue="mail", run_at=now - timedelta(minutes=1), _quantity=3)
    baker.make(Task, name="app:a", queue="mail", run_at=now + timedelta(hours=1))
    baker.make(Task, name="app:b", status=Status.RUNNING, worker_id=WORKER,
               run_token=uuid.uuid4(), started_at=now)  # fmt: skip
    baker.make(Task, name="app:b", status=Status.FAILED, error="ValueError: x",
               error_code="exception", started_at=now, finished_at=now)  # fmt: skip


@pytest.mark.django_db
def test_every_consumer_renders_the_same_snapshot(busy: None) -> None:
    from django_pq.metrics import PQCollector

    state = read_snapshot(**EVERYTHING)
    text = render(state)
    as_json = status.as_json(state)
    numbers = dashboard.Overview(state)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in PQCollector(buckets=EVERYTHING["buckets"]).families(state)
        for sample in family.samples
    }

    assert next(line for line in text.splitlines() if line.startswith("mail")).split()[1:4] == [
        "3",
        "1",
        "0",
    ]
    assert sum(count["ready"] for count in as_json["queues"]) == 3
    assert (numbers.totals.ready, numbers.totals.running, numbers.totals.failed) == (3, 1, 1)
    assert samples["pq_tasks", (("priority", "50"), ("queue", "mail"), ("state", "ready"))] == 3
    assert samples["pq_tasks_finished_recent", (("status", "failed"), ("task", "app:b"))] == 1
    assert as_json["finished"] == [{"name": "app:b", "status": "failed", "count": 1,
                                    "seconds": 0.0}]  # fmt: skip


@pytest.fixture
def snapshots_read(monkeypatch: pytest.MonkeyPatch) -> list[Snapshot]:
    """Every snapshot read while the test runs, whichever consumer read it."""
    read: list[Snapshot] = []
    original = reads.read_snapshot

    def spy(**kwargs: Any) -> Snapshot:
        read.append(original(**kwargs))
        return read[-1]

    for consumer in (status, dashboard, pytest.importorskip("django_pq.metrics")):
        monkeypatch.setattr(consumer, "read_snapshot", spy)
    return read


def pq_statements(run: Callable[[], object]) -> list[str]:
    """The statements ``run`` sends that read django-pq's task or schedule tables."""
    with CaptureQueriesContext(connection) as captured:
        run()
    return [
        query["sql"]
        for query in captured.captured_queries
        if "pq_tasks" in query["sql"] or "pq_periodic" in query["sql"]
    ]


def pq_status() -> None:
    call_command("pq_status", "--json", stdout=io.StringIO())


@pytest.mark.django_db
def test_each_consumer_reads_one_snapshot_and_nothing_else(
    busy: None, admin_client: Client, snapshots_read: list[Snapshot]
) -> None:
    from django_pq.metrics import make_metrics_view

    view = make_metrics_view()
    consumers: dict[str, Callable[[], object]] = {
        "pq_status": pq_status,
        "overview": lambda: admin_client.get(reverse("admin:django_pq_overview")),
        "metrics": lambda: view(RequestFactory().get("/metrics")),
    }
    for name, run in consumers.items():
        snapshots_read.clear()
        statements = pq_statements(run)
        assert len(snapshots_read) == 1, name
        assert len(statements) == 1 and "json_build_object" in statements[0], (name, statements)
        assert isinstance(snapshots_read[0], Snapshot)


RENDERERS = (
    "django_pq/status.py",
    "django_pq/dashboard.py",
    "django_pq/metrics.py",
    "django_pq/admin/overview.py",
    "django_pq/admin/chart.py",
    "django_pq/management/commands/pq_status.py",
)


@pytest.mark.parametrize("path", RENDERERS)
def test_the_renderers_hold_no_sql(path: str) -> None:
    source = (Path(__file__).parents[2] / path).read_text()
    for sign in ("SELECT ", " FROM pq_", "cursor(", "connections[", ".execute("):
        assert sign not in source, f"{path} reads the database itself ({sign!r}); use read_snapshot"


@pytest.mark.django_db
def test_a_lease_no_worker_could_take_is_no_live_worker() -> None:
    # A lease further ahead than PQ_LEASE may reach (a hand-written year 9999) is no
    # lease a worker wrote: the reaper takes its tasks and the admin lists it as dead,
    # so the snapshot must not count it live either (nor tell pq_status all is well).
    ghost = baker.make(
        Worker, id=WORKER, hostname="ghost", pid=1, concurrency=1,
        lease_expires_at=timezone.now() + timedelta(days=30),
    )  # fmt: skip
    assert not Worker.objects.alive().filter(pk=ghost.pk).exists()
    snapshot = read_snapshot()
    assert snapshot.workers == () and not snapshot.has_live_worker
    with pytest.raises(SystemExit) as exited:
        call_command("pq_status", stdout=io.StringIO())
    assert exited.value.code == 1
