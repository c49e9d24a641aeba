"""Whatever a task does to its own process, the worker records why and carries on."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from django.db import connection, transaction

import django_pq as pq
from django_pq.models import Task
from tests.conftest import skip_or_fail
from tests.testapp import tasks
from tests.testapp.models import RunLog
from tests.worker.conftest import run_burst, wait_until


def outcome(task: Task) -> tuple[str, str]:
    task.refresh_from_db()
    return task.status, task.error_code


def test_committed_tasks_run_once_and_rolled_back_ones_never(start_worker):
    with pytest.raises(RuntimeError), transaction.atomic():
        rolled_back = pq.enqueue(tasks.log_run, "rolled back")
        raise RuntimeError
    committed = [pq.enqueue(tasks.log_run, f"run {n}") for n in range(5)]
    run_burst(start_worker, "--concurrency", "2")
    assert sorted(RunLog.objects.filter(event="run").values_list("value", flat=True)) == [
        f"run {n}" for n in range(5)
    ]
    assert not Task.objects.filter(pk=rolled_back.pk).exists()
    for task in committed:
        task.refresh_from_db()
        assert (task.status, task.attempts, task.decoded_result()) == ("completed", 1, task.result)


def test_results_timings_and_resource_use_are_recorded(start_worker):
    task = pq.enqueue(tasks.echo, 1, when="now")
    async_task = pq.enqueue(tasks.async_add, 2, 3)
    run_burst(start_worker)
    task.refresh_from_db()
    async_task.refresh_from_db()
    assert task.decoded_result() == {"args": [1], "kwargs": {"when": "now"}}
    assert async_task.decoded_result() == 5
    assert task.started_at <= task.finished_at
    assert task.peak_rss > 10 * 1024 * 1024 and task.cpu_seconds >= 0
    assert task.worker_id is not None


@pytest.mark.parametrize(
    ("func", "error_code", "message"),
    [
        (tasks.raise_error, "exception", "ValueError: this task always fails"),
        (tasks.call_sys_exit, "exception", "sys.exit(3)"),
        (tasks.raise_keyboard_interrupt, "exception", "KeyboardInterrupt"),
        (tasks.segfault, "signal", "SIGSEGV"),
        (tasks.abort, "signal", "SIGABRT"),
        (tasks.exit_hard, "exception", "exited with status 7"),
    ],
)
def test_crashing_tasks_fail_with_a_reason_and_the_worker_lives_on(
    start_worker, func, error_code, message
):
    bad = pq.enqueue(func, priority=pq.Priority.HIGH)
    good = pq.enqueue(tasks.add, 1, 1)
    worker = run_burst(start_worker, "--concurrency", "1")
    bad.refresh_from_db()
    assert (bad.status, bad.error_code) == ("failed", error_code), worker.output()
    assert message in bad.error
    assert outcome(good) == ("completed", "")


def test_task_over_its_memory_limit_is_stopped(start_worker):
    growing = pq.enqueue(tasks.hog_memory, 400)
    sudden = pq.enqueue(tasks.allocate_at_once, 2000)
    good = pq.enqueue(tasks.add, 1, 1, priority=pq.Priority.BATCH)
    run_burst(start_worker, "--concurrency", "1", "--max-memory", "150")
    for task in (growing, sudden):
        task.refresh_from_db()
        assert (task.status, task.error_code) == ("failed", "memory"), task.error
    assert "150 MB" in growing.error
    assert outcome(good) == ("completed", "")


def test_a_memory_limit_past_what_the_kernel_caps_still_runs_tasks(start_worker):
    # inf passes PQ_MAX_MEMORY's rule (a number > 0): a limit no task reaches, not one
    # that fails every task before it starts.
    task = pq.enqueue(tasks.add, 2, 3)
    worker = run_burst(start_worker, "--concurrency", "1", "--max-memory", "inf")
    assert outcome(task) == ("completed", ""), worker.output()


def test_a_memory_limit_above_the_hard_limit_is_capped_at_it(start_worker, monkeypatch):
    # Started under a hard address-space limit (ulimit -v, a container's): a child may
    # not raise it, so asking for more must cap at it, not fail every task.
    if shutil.which("prlimit") is None:
        skip_or_fail("needs prlimit (util-linux)")
    wrapper = Path(tempfile.mkdtemp()) / "python"
    hard = 8 * 1024**3
    wrapper.write_text(f'#!/bin/sh\nexec prlimit --as={hard}:{hard} -- {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(wrapper))
    task = pq.enqueue(tasks.add, 2, 3)
    worker = run_burst(start_worker, "--concurrency", "1", "--max-memory", "100000")
    assert outcome(task) == ("completed", ""), worker.output()


def test_operator_kill_is_a_signal_not_out_of_memory(start_worker):
    task = pq.enqueue(tasks.wait_for_file, "/nonexistent/never", label="victim")
    worker = start_worker("--concurrency", "1", "--max-memory", "500")
    start = wait_until(lambda: RunLog.objects.filter(event="start", value="victim").first())
    os.kill(start.pid, 9)
    wait_until(lambda: outcome(task)[0] == "failed")
    task.refresh_from_db()
    assert task.error_code == "signal" and "SIGKILL" in task.error
    assert worker.process.poll() is None


@pytest.mark.parametrize("func", [tasks.ignore_sigterm_and_sleep, tasks.long_c_call])
def test_task_past_its_runtime_is_killed_even_if_it_resists(start_worker, func):
    args = (60,) if func is tasks.ignore_sigterm_and_sleep else ()
    stuck = pq.enqueue(func, *args, max_runtime=1)
    good = pq.enqueue(tasks.add, 1, 1, priority=pq.Priority.BATCH)
    run_burst(start_worker, "--concurrency", "1", timeout=30)
    stuck.refresh_from_db()
    assert (stuck.status, stuck.error_code) == ("failed", "timeout")
    assert "max_runtime of 1s" in stuck.error
    assert 1 <= (stuck.finished_at - stuck.started_at).total_seconds() < 10
    assert outcome(good) == ("completed", "")


def test_worker_max_runtime_applies_to_tasks_without_their_own(start_worker):
    slow = pq.enqueue(tasks.sleep, 30)
    own = pq.enqueue(tasks.sleep, 0.1, max_runtime=20)
    run_burst(start_worker, "--concurrency", "2", "--max-runtime", "1")
    assert outcome(slow) == ("failed", "timeout")
    assert outcome(own) == ("completed", "")


def test_error_text_is_made_safe_and_bounded(start_worker):
    task = pq.enqueue(tasks.huge_error)
    run_burst(start_worker, settings={"PQ_ERROR_MAX_LENGTH": 5000})
    task.refresh_from_db()
    assert task.error_code == "exception"
    assert "\x00" not in task.error and len(task.error) < 5200
    assert "characters cut" in task.error


def test_an_error_utf8_cannot_encode_lone_surrogate_fails_only_its_task(start_worker):
    bad = pq.enqueue(tasks.error_with_lone_surrogate, priority=pq.Priority.HIGH)
    good = pq.enqueue(tasks.add, 1, 1)
    worker = run_burst(start_worker, "--concurrency", "1")
    bad.refresh_from_db()
    assert (bad.status, bad.error_code) == ("failed", "exception"), worker.output()
    assert "ValueError: bad name \\udcff" in bad.error
    assert outcome(good) == ("completed", "")


@pytest.mark.parametrize("per_child", ["1", "2"])
def test_a_forked_copy_returning_from_the_task_does_not_report_for_it(start_worker, per_child):
    forking = pq.enqueue(tasks.fork_and_return_in_both, priority=pq.Priority.HIGH)
    after = pq.enqueue(tasks.add, 1, 1)
    worker = run_burst(start_worker, "--concurrency", "1", "--tasks-per-child", per_child)
    forking.refresh_from_db()
    assert (forking.status, forking.decoded_result()) == ("completed", "the task"), worker.output()
    after.refresh_from_db()
    assert (after.status, after.decoded_result()) == ("completed", 2), worker.output()


def test_hostile_rows_run_nothing_and_import_nothing(start_worker):
    marker = Path(tempfile.mkdtemp()) / "pwned"
    side_effect_marker = Path(tempfile.mkdtemp()) / "imported"
    with connection.cursor() as cursor:
        for name, payload in [
            ("os:system", f'{{"args": ["touch {marker}"], "kwargs": {{}}}}'),
            ("tests.sideeffect:run", '{"args": [], "kwargs": {}}'),
            ("tests.testapp.tasks:add", '{"args": "not a list", "kwargs": {}}'),
            ("tests.testapp.tasks:add", '{"args": [{"__pq__": "pickle", "v": "x"}], "kwargs": {}}'),
            ("tests.testapp.tasks:nonexistent", '{"args": [], "kwargs": {}}'),
            ("no-colon", '{"args": [], "kwargs": {}}'),
        ]:
            cursor.execute(
                "INSERT INTO pq_tasks (queue, name, payload, priority, status, attempts, "
                "max_attempts, error, error_code, is_cancel_requested) VALUES "
                "('default', %s, %s::jsonb, 50, 'pending', 0, 1, '', '', false)",
                [name, payload],
            )
    good = pq.enqueue(tasks.add, 1, 1, priority=pq.Priority.BATCH)
    os.environ["PQ_SIDE_EFFECT_MARKER"] = str(side_effect_marker)
    try:
        run_burst(start_worker, "--concurrency", "1")
    finally:
        del os.environ["PQ_SIDE_EFFECT_MARKER"]
    codes = dict(Task.objects.exclude(pk=good.pk).values_list("name", "error_code"))
    assert codes["os:system"] == "unknown_task"
    assert codes["tests.sideeffect:run"] == "unknown_task"
    assert codes["tests.testapp.tasks:nonexistent"] == "unknown_task"
    assert codes["no-colon"] == "unknown_task"
    assert sorted(
        Task.objects.filter(name="tests.testapp.tasks:add")
        .exclude(pk=good.pk)
        .values_list("error_code", flat=True)
    ) == ["bad_payload", "bad_payload"]
    assert not marker.exists() and not side_effect_marker.exists()
    assert outcome(good) == ("completed", "")


def test_hooks_run_in_the_child(start_worker):
    task = pq.enqueue(tasks.pid)
    worker = run_burst(start_worker)
    task.refresh_from_db()
    child_pid = task.decoded_result()
    assert child_pid != worker.pid
    hooks = dict(RunLog.objects.filter(task_id=task.pk).values_list("event", "pid"))
    assert hooks == {"hook_started": child_pid, "hook_finished": child_pid}
    assert RunLog.objects.get(event="hook_finished").value == "completed"


def test_a_raising_hook_is_recorded_and_not_fatal(start_worker):
    task = pq.enqueue(tasks.echo, break_hook=True)
    good = pq.enqueue(tasks.add, 1, 1, priority=pq.Priority.BATCH)
    run_burst(start_worker, "--concurrency", "1")
    task.refresh_from_db()
    assert task.status == "completed"
    assert "hook failed on purpose" in task.error
    assert outcome(good) == ("completed", "")


def test_children_querying_do_not_disturb_the_parent_connection(start_worker):
    pq.enqueue_many([pq.prepare(tasks.record_queries, 100) for _ in range(40)])
    worker = run_burst(start_worker, "--concurrency", "2", timeout=120)
    assert Task.objects.completed().count() == 40
    assert RunLog.objects.filter(event="queries").count() == 40
    log = worker.output().lower()
    assert "error" not in log and "unavailable" not in log, worker.output()
