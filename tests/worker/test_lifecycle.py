"""The worker as a process among processes: wake-ups, signals, crashes, races, priorities."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from django.test import override_settings

import django_pq as pq
from django_pq.models import Task, Worker
from django_pq.worker.loop import ExitCode
from tests.conftest import connect_like_django, skip_or_fail
from tests.testapp import tasks
from tests.testapp.models import RunLog
from tests.worker.conftest import FAKETIME_LIBRARY, REPO, pid_alive, run_burst, wait_until


def status_of(task: Task) -> str:
    task.refresh_from_db()
    return task.status


def registered(worker) -> Worker:
    return wait_until(lambda: Worker.objects.filter(pid=worker.pid).first(), 30, "registration")


#: Heartbeats (which also look for ready work) far beyond the tests' timeouts, so what
#: wakes the worker in time is the NOTIFY (or the timer it set), never a heartbeat.
SLOW_HEARTBEAT = {"PQ_HEARTBEAT_INTERVAL": 600, "PQ_LEASE": 1800}


def settled(worker) -> None:
    """Wait until the worker has made its first claim (finding nothing) and its first
    heartbeat, and sits idle: from here on only a wake-up can make it look for work again
    before its next heartbeat. (It claims when it registers; the heartbeat comes after,
    and claims again only if it finds work ready.)"""
    row = registered(worker)

    def idle_after_a_heartbeat() -> bool:
        with connect_like_django() as admin:
            found = admin.execute(
                "SELECT a.state FROM pg_stat_activity a, pq_workers w "
                "WHERE a.application_name = %s AND w.id = %s AND w.heartbeat_at > w.started_at",
                [f"pq_worker:{worker.pid}", row.pk],
            ).fetchone()
        return found is not None and found[0] == "idle"

    wait_until(idle_after_a_heartbeat, 30, "the worker's first claim and heartbeat")


def test_idle_worker_starts_a_new_task_promptly(start_worker):
    # A poll interval far beyond the timeout: only the NOTIFY can wake it in time.
    worker = start_worker("--poll-interval", "600", settings=SLOW_HEARTBEAT)
    settled(worker)
    task = pq.enqueue(tasks.add, 2, 2)
    wait_until(lambda: status_of(task) == "completed", 10, "the task to run")


@pytest.mark.parametrize("channel", ["Wake_Up", "order"])
def test_any_channel_the_setting_admits_wakes_the_worker(start_worker, channel):
    # PQ_NOTIFY_CHANNEL admits capitals and SQL keywords: enqueue's pg_notify() names the
    # channel as written, so the worker must LISTEN on exactly that name.
    worker = start_worker(
        "--poll-interval", "600", settings={**SLOW_HEARTBEAT, "PQ_NOTIFY_CHANNEL": channel}
    )
    with override_settings(PQ_NOTIFY_CHANNEL=channel):
        settled(worker)
        task = pq.enqueue(tasks.add, 2, 2)
    wait_until(
        lambda: status_of(task) == "completed",
        10,
        lambda: f"the task to run; the worker's log:\n{worker.output()}",
    )


def ran_when_due(task: Task, worker, timeout: float) -> None:
    """Wait until the future ``task`` has completed, and check it did not start early."""
    wait_until(
        lambda: status_of(task) == "completed",
        timeout,
        lambda: f"task {task.id} to run when due; the worker's log:\n{worker.output()}",
    )
    task.refresh_from_db()
    assert task.started_at >= task.run_at


def test_future_task_runs_when_due_without_a_poll(start_worker):
    worker = start_worker("--poll-interval", "600", settings=SLOW_HEARTBEAT)
    settled(worker)
    task = pq.enqueue(tasks.add, 1, 1, run_at=dt.timedelta(seconds=1))
    ran_when_due(task, worker, 10)


def test_a_future_task_runs_when_due_after_the_worker_clock_jumps_ahead(start_worker, tmp_path):
    # The worker sets a future task's timer by its wall clock, corrected by the offset its
    # last heartbeat measured. Here the clock jumps 2 s ahead after that measurement, so the
    # timer comes 2 s early: the database must have the last word, or the claim finds
    # nothing due and the task waits for the next heartbeat (ten minutes here).
    if not FAKETIME_LIBRARY.exists():
        skip_or_fail(f"libfaketime is missing ({FAKETIME_LIBRARY}): apt-get install faketime")
    clock = tmp_path / "clock"

    def set_clock(offset: str) -> None:
        # Replaced, never rewritten in place: libfaketime rereads the file on every call
        # and must not see it empty.
        (tmp_path / "clock.new").write_text(f"{offset}\n")
        (tmp_path / "clock.new").replace(clock)

    set_clock("+0")
    faked_wall_clock = {
        "LD_PRELOAD": str(FAKETIME_LIBRARY),
        "FAKETIME_TIMESTAMP_FILE": str(clock),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    worker = start_worker("--poll-interval", "600", settings=SLOW_HEARTBEAT, env=faked_wall_clock)
    settled(worker)
    set_clock("+2")
    task = pq.enqueue(tasks.add, 1, 1, run_at=dt.timedelta(seconds=3))
    ran_when_due(task, worker, 15)


def test_future_tasks_sent_together_each_run_when_due_without_a_poll(start_worker):
    # One statement, one notification: it names only the earliest. Claiming that one must
    # not use up the timer the later one needs (the heartbeat is 600 s away).
    worker = start_worker("--poll-interval", "600", settings=SLOW_HEARTBEAT)
    settled(worker)
    sooner, later = pq.enqueue_many(
        [
            pq.prepare(tasks.add, 1, 1, run_at=dt.timedelta(seconds=1)),
            pq.prepare(tasks.add, 1, 2, run_at=dt.timedelta(seconds=2)),
        ]
    )
    for task in (sooner, later):
        ran_when_due(task, worker, 10)


def test_without_listen_the_worker_polls(start_worker):
    worker = start_worker("--no-listen", "--poll-interval", "0.2")
    registered(worker)
    task = pq.enqueue(tasks.add, 2, 2)
    wait_until(lambda: status_of(task) == "completed", 10)


def test_kill_9_of_the_parent_kills_children_and_another_worker_reaps(start_worker):
    once = pq.enqueue(tasks.sleep, 60, label="once")
    retried = pq.enqueue(tasks.sleep, 60, label="retried", max_attempts=2)
    victim = start_worker("--concurrency", "2")
    starts = wait_until(
        lambda: (
            RunLog.objects.filter(event="start").count() == 2
            and list(RunLog.objects.filter(event="start"))
        )
    )
    os.kill(victim.pid, signal.SIGKILL)
    for start in starts:
        wait_until(lambda pid=start.pid: not pid_alive(pid), 10, "the orphaned child to die")
    # A second worker notices the lapsed lease (3s in tests) and reaps both.
    start_worker("--concurrency", "1", "--queue", "nothing-to-claim")
    wait_until(lambda: status_of(once) == "failed", 20, "the lost task to be reaped")
    once.refresh_from_db()
    assert once.error_code == "worker_lost"
    wait_until(lambda: status_of(retried) == "pending", 20, "the retryable task to be re-queued")
    retried.refresh_from_db()
    assert retried.attempts == 1 and retried.error_code == "worker_lost"


def test_sigterm_drains_short_tasks_and_stops_long_ones(start_worker):
    short = pq.enqueue(tasks.sleep, 1, label="short")
    long = pq.enqueue(tasks.sleep, 60, label="long")
    worker = start_worker("--concurrency", "2", "--drain-timeout", "2")
    wait_until(lambda: RunLog.objects.filter(event="start").count() == 2)
    worker.signal(signal.SIGTERM)
    code = worker.wait(20)
    assert code == ExitCode.TASKS_KILLED, worker.output()
    assert status_of(short) == "completed"
    long.refresh_from_db()
    assert (long.status, long.error_code) == ("failed", "shutdown")
    assert Worker.objects.get(pid=worker.pid).stopped_at is not None


def test_sigterm_with_nothing_running_exits_cleanly(start_worker):
    worker = start_worker()
    registered(worker)
    worker.signal(signal.SIGTERM)
    assert worker.wait(10) == ExitCode.OK


def test_second_signal_stops_at_once(start_worker):
    long = pq.enqueue(tasks.sleep, 60, label="long", max_attempts=3)
    worker = start_worker("--drain-timeout", "600")
    wait_until(lambda: RunLog.objects.filter(event="start").exists())
    worker.signal(signal.SIGINT)
    wait_until(lambda: "draining" in worker.output(), 10)
    worker.signal(signal.SIGINT)
    assert worker.wait(10) == ExitCode.TASKS_KILLED
    long.refresh_from_db()
    # It had attempts left, so it waits to be run again rather than failing.
    assert (long.status, long.error_code) == ("pending", "shutdown")


@pytest.mark.slow
def test_four_workers_run_every_task_exactly_once(start_worker):
    pq.enqueue_many([pq.prepare(tasks.log_run, str(n)) for n in range(4000)])
    workers = [start_worker("--burst", "--concurrency", "2") for _ in range(4)]
    for worker in workers:
        assert worker.wait(600) == 0, worker.output()
    runs = Counter(RunLog.objects.filter(event="run").values_list("value", flat=True))
    assert len(runs) == 4000 and set(runs.values()) == {1}
    assert Task.objects.completed().count() == 4000
    assert Task.objects.filter(attempts=1).count() == 4000


def test_higher_priority_runs_first(start_worker):
    for label, priority in [("low", 25), ("critical", 100), ("normal", 50), ("high", 75)]:
        pq.enqueue(tasks.log_run, label, priority=priority)
    run_burst(start_worker, "--concurrency", "1")
    order = list(RunLog.objects.filter(event="run").order_by("id").values_list("value", flat=True))
    assert order == ["critical", "high", "normal", "low"]


def test_priority_and_queue_dedicated_workers(start_worker):
    high = pq.enqueue(tasks.log_run, "high", priority=pq.Priority.HIGH)
    critical = pq.enqueue(tasks.log_run, "critical", priority=pq.Priority.CRITICAL)
    normal = pq.enqueue(tasks.log_run, "normal")
    mail = pq.enqueue(tasks.log_run, "mail", queue="mail", priority=pq.Priority.CRITICAL)
    run_burst(start_worker, "--priority", "high", "--queue", "default")
    assert [status_of(t) for t in (high, critical, normal, mail)] == [
        "completed",
        "pending",
        "pending",
        "pending",
    ]
    run_burst(start_worker, "--min-priority", "90", "--queue", "default")
    assert [status_of(t) for t in (critical, normal, mail)] == ["completed", "pending", "pending"]
    run_burst(start_worker, "--queue", "mail")
    assert [status_of(t) for t in (normal, mail)] == ["pending", "completed"]


def test_retries_back_off_and_then_succeed(start_worker):
    task = pq.enqueue(tasks.fail_until, 3, "k", max_attempts=3)
    doomed = pq.enqueue(tasks.fail_until, 5, "d", max_attempts=2)
    start_worker(settings={"PQ_RETRY_DELAY": 0.3, "PQ_RETRY_MAX_DELAY": 5})
    wait_until(lambda: status_of(task) == "completed" and status_of(doomed) == "failed", 30)
    task.refresh_from_db()
    doomed.refresh_from_db()
    assert task.attempts == 3 and task.decoded_result() == 3
    assert doomed.attempts == 2 and "failing run 2" in doomed.error
    times = list(
        RunLog.objects.filter(event="attempt", value="k")
        .order_by("id")
        .values_list("at", flat=True)
    )
    # Backoff 0.3s then 0.6s, each with up to half of it as jitter.
    assert (times[1] - times[0]).total_seconds() >= 0.15
    assert (times[2] - times[1]).total_seconds() >= 0.3


def test_upsert_while_running_parks_and_then_runs_the_new_version(start_worker):
    release = Path(tempfile.mkdtemp()) / "release"
    task = pq.upsert(tasks.wait_for_file, str(release), label="v1", client_id="job")
    start_worker("--concurrency", "1")
    wait_until(lambda: RunLog.objects.filter(event="start", value="v1").exists())
    pq.upsert(tasks.wait_for_file, str(release), label="v2", client_id="job")
    pq.upsert(tasks.wait_for_file, str(release), label="v3", client_id="job")
    release.touch()
    wait_until(
        lambda: (
            status_of(task) == "completed" and task.attempts == 1 and task.decoded_result() == "v3"
        ),
        20,
    )
    labels = list(
        RunLog.objects.filter(event="start").order_by("id").values_list("value", flat=True)
    )
    assert labels == ["v1", "v3"]


def test_cancel_while_running_stops_the_task(start_worker):
    task = pq.enqueue(tasks.sleep, 60, label="cancel me")
    good = pq.enqueue(tasks.add, 1, 1, priority=pq.Priority.BATCH)
    worker = start_worker("--concurrency", "1")
    wait_until(lambda: RunLog.objects.filter(event="start").exists())
    assert pq.cancel(task) is True
    wait_until(lambda: status_of(task) == "cancelled", 5, "the running task to be cancelled")
    task.refresh_from_db()
    assert task.error_code == "cancelled"
    wait_until(lambda: status_of(good) == "completed", 10)
    assert worker.process.poll() is None


def test_terminated_connection_is_reestablished(start_worker):
    worker = start_worker("--concurrency", "1")
    registered(worker)
    running = pq.enqueue(tasks.sleep, 1, label="across")
    wait_until(lambda: RunLog.objects.filter(event="start").exists())
    with connect_like_django() as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s",
            [f"pq_worker:{worker.pid}"],
        ).fetchone()[0]
    assert killed == 1
    wait_until(lambda: status_of(running) == "completed", 20)
    later = pq.enqueue(tasks.add, 1, 2)
    wait_until(lambda: status_of(later) == "completed", 20)
    assert worker.process.poll() is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--concurrency", "0"], "--concurrency must be at least 1"),
        (["--priority", "urgent"], "neither a priority name"),
        (["--min-priority", "101"], "outside 0..100"),
        (
            ["--max-runtime", "-1"],
            "--max-runtime must be None or a number of seconds > 0; got -1.0",
        ),
        (["--poll-interval", "0"], "--poll-interval must be a number of seconds > 0; got 0.0"),
    ],
)
def test_bad_flags_fail_fast_with_a_clear_message(flags, message):
    result = subprocess.run(
        [sys.executable, "-m", "django", "pq_worker", *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == ExitCode.USAGE
    assert message in result.stderr


def test_old_finished_tasks_are_pruned_and_the_rest_kept(start_worker):
    import datetime as dt

    from django.utils import timezone
    from model_bakery import baker

    long_ago = timezone.now() - dt.timedelta(days=30)
    old = baker.make(Task, name="x:y", status="completed", finished_at=long_ago, _quantity=1200)
    recent = baker.make(Task, name="x:y", status="failed", finished_at=timezone.now())
    waiting = pq.enqueue(tasks.add, 1, 1, run_at=dt.timedelta(days=1))
    worker = start_worker(settings={"PQ_RETENTION": 7 * 24 * 3600})
    wait_until(
        lambda: not Task.objects.filter(pk__in=[t.pk for t in old]).exists(),
        30,
        "old finished tasks to be pruned",
    )
    assert Task.objects.filter(pk__in=[recent.pk, waiting.pk]).count() == 2
    assert worker.process.poll() is None


def test_after_a_reconnect_claims_whose_reply_was_lost_are_reaped(start_worker):
    """A claim can commit while the connection dies before its reply: the row says the
    worker holds it, but no child runs it. After reconnecting, the worker finds it."""
    worker = start_worker("--concurrency", "1", "--queue", "elsewhere")
    row = registered(worker)
    orphan = pq.enqueue(tasks.add, 1, 1, max_attempts=2)
    Task.objects.filter(pk=orphan.pk).update(
        status="running",
        worker_id=row.id,
        attempts=1,
        run_token="00000000-0000-0000-0000-0000000000aa",
    )
    with connect_like_django() as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [f"pq_worker:{worker.pid}"],
        )
    wait_until(lambda: status_of(orphan) == "pending", 20, "the orphaned claim to be re-queued")
    orphan.refresh_from_db()
    assert orphan.error_code == "worker_lost" and orphan.run_token is None


def test_a_bad_setting_is_a_usage_error_naming_the_check():
    result = subprocess.run(
        [sys.executable, "-m", "django", "pq_worker"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PYTHONPATH": str(REPO),
            "DJANGO_PQ_TEST_SETTINGS": '{"PQ_POLL_INTERVAL": 0}',
        },
    )
    assert result.returncode == ExitCode.USAGE
    assert "django_pq.E010" in result.stderr and "PQ_POLL_INTERVAL" in result.stderr
