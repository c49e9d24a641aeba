"""The worker parent against what a task or a row can do to it: kill its connection, exit
at import, leave its process group, hide descendants, hold values no timer can use."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

import pytest

import django_pq as pq
from django_pq.models import Task, Worker
from tests.conftest import connect_like_django, constraints_dropped
from tests.testapp import tasks, worker_tasks
from tests.testapp.models import RunLog
from tests.worker.conftest import pid_alive, wait_until


def finished(task: Task) -> Task | None:
    task.refresh_from_db()
    return task if task.status in {"completed", "failed", "cancelled"} else None


def registered(worker) -> Worker:
    return wait_until(lambda: Worker.objects.filter(pid=worker.pid).first(), 30, "registration")


@pytest.fixture
def marker():
    path = Path(tempfile.mkdtemp()) / "pid"
    yield str(path)
    if path.exists():
        pid = int(path.read_text())
        if pid_alive(pid):
            os.kill(pid, 9)


# -- an outcome waiting to be written is not an orphan -----------------


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_a_task_that_kills_its_workers_connection_runs_once_and_keeps_its_result(
    start_worker, max_attempts
):
    task = pq.enqueue(worker_tasks.kill_worker_connection, "cut", max_attempts=max_attempts)
    worker = start_worker("--concurrency", "1")
    done = wait_until(lambda: finished(task), 60, "the task to finish")
    assert (done.status, done.error_code, done.result) == ("completed", "", "cut"), worker.output()
    assert RunLog.objects.filter(event="start", value="cut").count() == 1
    assert worker.process.poll() is None


# -- defect 5: a module that exits at import fails its task alone --------------------------


def test_a_module_that_exits_at_import_fails_its_task_and_the_worker_lives(start_worker):
    bad = Task.objects.create(name="tests.testapp.exits_on_import:task", payload={})
    worker = start_worker("--concurrency", "1")
    done = wait_until(lambda: finished(bad), 60, "the poisoned task to finish")
    assert (done.status, done.error_code) == ("failed", "unknown_task")
    assert "sys.exit(0)" in done.error
    good = pq.enqueue(tasks.add, 2, 3)
    assert wait_until(lambda: finished(good), 30).result == 5
    assert worker.process.poll() is None


# -- defect 6: max_runtime reaches a task that left its group; NaN is "not set" -------------


def test_a_task_that_leaves_its_process_group_is_killed_at_max_runtime(start_worker, marker):
    task = pq.enqueue(worker_tasks.leave_group_and_sleep, 600, marker, max_runtime=1)
    start_worker("--concurrency", "1")
    done = wait_until(lambda: finished(task), 60, "the runaway task to be stopped")
    assert (done.status, done.error_code) == ("failed", "timeout")
    assert not pid_alive(int(Path(marker).read_text()))


@pytest.mark.parametrize("bad_runtime", ["NaN", "Infinity"])
def test_an_unusable_max_runtime_in_the_row_means_the_workers_default(start_worker, bad_runtime):
    task = pq.enqueue(tasks.sleep, 600, label="runaway")
    # Written as SQL, as a row from before the CHECK constraints could be.
    with constraints_dropped(Task, "pq_tasks_max_runtime_positive"):
        with connect_like_django() as admin:
            admin.execute(
                "UPDATE pq_tasks SET max_runtime = %s::float8 WHERE id = %s", [bad_runtime, task.pk]
            )
        start_worker("--concurrency", "1", "--max-runtime", "1")
        done = wait_until(lambda: finished(task), 60, "the task to hit --max-runtime")
        Task.objects.filter(pk=task.pk).delete()
    assert (done.status, done.error_code) == ("failed", "timeout")
    assert "max_runtime of 1s" in done.error


# -- build item 6: descendants hidden from the process group die with their task -----------


@pytest.mark.parametrize("double_fork", [False, True], ids=["setsid", "double-fork"])
def test_a_hidden_grandchild_dies_when_its_task_ends(start_worker, marker, double_fork):
    task = pq.enqueue(worker_tasks.hide_grandchild, marker, double_fork=double_fork)
    worker = start_worker("--concurrency", "1")
    done = wait_until(lambda: finished(task), 60, "the task to return")
    assert done.status == "completed", done.error
    grandchild = int(Path(marker).read_text())
    wait_until(lambda: not pid_alive(grandchild), 15, "the hidden grandchild to be killed")
    assert worker.process.poll() is None


@pytest.mark.parametrize("double_fork", [False, True], ids=["setsid", "double-fork"])
def test_a_hidden_grandchild_dies_when_its_task_times_out(start_worker, marker, double_fork):
    task = pq.enqueue(
        worker_tasks.hide_grandchild, marker, 600, double_fork=double_fork, max_runtime=2
    )
    start_worker("--concurrency", "1")
    done = wait_until(lambda: finished(task), 60, "the task to time out")
    assert done.error_code == "timeout"
    grandchild = int(Path(marker).read_text())
    wait_until(lambda: not pid_alive(grandchild), 15, "the hidden grandchild to be killed")


def test_a_hidden_grandchild_of_a_reused_child_dies_when_its_task_ends(start_worker, marker):
    task = pq.enqueue(worker_tasks.hide_grandchild, marker)
    start_worker("--concurrency", "1", "--tasks-per-child", "5")
    assert wait_until(lambda: finished(task), 60).status == "completed"
    grandchild = int(Path(marker).read_text())
    wait_until(lambda: not pid_alive(grandchild), 15, "the hidden grandchild to be killed")


# -- defect 9: a failed heartbeat is retried soon --------------------------------------------


def test_a_failed_heartbeat_is_retried_well_within_the_interval(start_worker):
    """Heartbeats 60 s apart, lease 180 s: after its session is killed the worker renews
    its lease again within seconds, not a minute later (read from its pq_workers row)."""
    worker = start_worker(
        "--concurrency", "1", settings={"PQ_HEARTBEAT_INTERVAL": 60.0, "PQ_LEASE": 180.0}
    )
    row = registered(worker)
    wait_until(lambda: Worker.objects.get(pk=row.pk).heartbeat_at, 30)
    with connect_like_django() as admin:
        [(before, killed_at)] = admin.execute(
            "SELECT w.heartbeat_at, clock_timestamp() FROM pq_workers w WHERE id = %s", [row.pk]
        ).fetchall()
        admin.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
            "WHERE application_name = %s",
            [f"pq_worker:{worker.pid}"],
        )

    def renewed_after_kill():
        beat = Worker.objects.get(pk=row.pk).heartbeat_at
        return beat if beat > killed_at else None

    beat = wait_until(renewed_after_kill, 60, "the lease to be renewed after the kill")
    # Measured by the database's clock: a heartbeat within a sixth of the interval.
    assert (beat - killed_at).total_seconds() < 10, (before, killed_at, beat)
    assert worker.process.poll() is None


# -- defect 3 (worker part): an infinite run_at does not break the heartbeat ------------------


def test_an_infinite_run_at_leaves_the_heartbeat_working(start_worker):
    poison = pq.enqueue(tasks.add, 1, 1, run_at=dt.timedelta(hours=1))
    with constraints_dropped(Task, "pq_tasks_run_at_finite"):
        with connect_like_django() as admin:
            # Written as SQL, as a row from before the CHECK constraints could be.
            admin.execute("UPDATE pq_tasks SET run_at = 'infinity' WHERE id = %s", [poison.pk])
        worker = start_worker("--concurrency", "1")
        row = registered(worker)
        first = Worker.objects.get(pk=row.pk).heartbeat_at
        wait_until(
            lambda: Worker.objects.get(pk=row.pk).heartbeat_at > first, 30, "a second heartbeat"
        )
        good = pq.enqueue(tasks.add, 2, 2)
        assert wait_until(lambda: finished(good), 30).result == 4
        Task.objects.filter(pk=poison.pk).delete()
    assert worker.process.poll() is None
    assert "Traceback" not in worker.output()


# -- found by the property test: values a row can hold that the worker's arithmetic or
# -- statements could not take ---------------------------------------------------------------


def test_a_dead_workers_task_with_an_unusable_parked_version_is_reaped_alone(start_worker):
    hostile = Task.objects.create(name="tests.testapp.tasks:add", payload={"args": [1, 1]})
    with connect_like_django() as admin:
        # Running under a worker that has no row (dead), with a parked version whose
        # run_at the finish statement cannot cast.
        admin.execute(
            "UPDATE pq_tasks SET status = 'running', attempts = 1, run_token = gen_random_uuid(),"
            " worker_id = gen_random_uuid(), started_at = now(),"
            """ requeue = '{"name": "x", "run_at": "not a time"}' WHERE id = %s""",
            [hostile.pk],
        )
    worker = start_worker("--concurrency", "1")
    reaped = wait_until(lambda: finished(hostile), 60, "the reaper to finish the task")
    assert (reaped.status, reaped.error_code) == ("failed", "worker_lost")
    good = pq.enqueue(tasks.add, 2, 2)
    assert wait_until(lambda: finished(good), 30).result == 4
    assert worker.process.poll() is None


@pytest.mark.parametrize("attempts", [32767, 2147483647])
def test_any_attempt_count_a_row_holds_still_runs_and_retries(start_worker, attempts):
    failing = pq.enqueue(tasks.raise_error, max_attempts=2147483647)
    counted = pq.enqueue(tasks.add, 3, 4)
    Task.objects.filter(pk__in=[failing.pk, counted.pk]).update(attempts=attempts)
    worker = start_worker("--concurrency", "1")
    assert wait_until(lambda: finished(counted), 30, "the counted task to run").result == 7
    if attempts < 2147483646:
        # The failing one ran, failed and was put back with a finite backoff.
        retried = wait_until(
            lambda: (
                Task.objects.filter(pk=failing.pk, status="pending", error_code="exception")
                .exclude(started_at=None)
                .first()
            ),
            30,
            "the failing task to be retried",
        )
        assert retried.run_at > retried.started_at
    else:
        # No attempt count is left past the largest: it ran once more and that was its last.
        spent = wait_until(lambda: finished(failing), 30, "the failing task to end")
        assert (spent.status, spent.error_code, spent.attempts) == ("failed", "exception", attempts)
    assert worker.process.poll() is None
    assert "Traceback" not in worker.output()


def test_a_lease_no_worker_could_take_does_not_keep_its_tasks_running(start_worker):
    """A dead worker's row leased until year 9999 (by hand, or a bad clock): its running
    task is reaped as if the lease had lapsed, and the row does not count as alive."""
    hostile = Task.objects.create(name="tests.testapp.tasks:add", payload={"args": [1, 1]})
    with connect_like_django() as admin:
        ghost = admin.execute(
            "INSERT INTO pq_workers (id, hostname, pid, queues, priorities, concurrency,"
            " started_at, heartbeat_at, lease_expires_at, version)"
            " VALUES (gen_random_uuid(), 'ghost', 1, '[]', '[]', 1, now(), now(),"
            " '9999-12-01', 'x') RETURNING id"
        ).fetchone()[0]
        admin.execute(
            "UPDATE pq_tasks SET status = 'running', attempts = 1, run_token = gen_random_uuid(),"
            " worker_id = %s, started_at = now() WHERE id = %s",
            [ghost, hostile.pk],
        )
    assert not Worker.objects.alive().filter(pk=ghost).exists()
    worker = start_worker("--concurrency", "1")
    reaped = wait_until(lambda: finished(hostile), 60, "the reaper to finish the task")
    assert (reaped.status, reaped.error_code) == ("failed", "worker_lost")
    assert worker.process.poll() is None
