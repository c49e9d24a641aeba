"""A task's own control, with real workers: pq.current_task(), pq.RetryLater,
pq.set_progress(); @pq.task defaults; PQ_DECLARED_TASKS_ONLY."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

import django_pq as pq
from django_pq.models import Task
from tests.testapp import policy_tasks, tasks
from tests.testapp.models import RunLog
from tests.worker.conftest import run_burst, wait_until


def contexts() -> list[dict]:
    return [
        json.loads(v)
        for v in RunLog.objects.filter(event="context")
        .values_list("value", flat=True)
        .order_by("id")
    ]


def runs(key: str) -> int:
    return RunLog.objects.filter(event="attempt", value=key).count()


# -- current_task() -------------------------------------------------------------------


def test_current_task_describes_the_run_in_sync_and_async_tasks(start_worker):
    sync = pq.enqueue(
        policy_tasks.record_context,
        "sync",
        True,
        queue="ctx",
        priority=pq.Priority.HIGH,
        client_id="the-sync-one",
        max_runtime=120,
        retry=pq.Retry(2, delay=0),
    )
    asynchronous = pq.enqueue(policy_tasks.record_context_async, "async", queue="ctx")
    run_burst(start_worker, "--concurrency", "1", "--queue", "ctx")
    first, second, third = sorted(contexts(), key=lambda c: (c["id"], c["attempt"]))
    assert (first["id"], first["attempt"], first["max_attempts"]) == (sync.pk, 1, 2)
    assert (second["id"], second["attempt"]) == (sync.pk, 2)
    assert (first["queue"], first["priority"], first["client_id"]) == ("ctx", 75, "the-sync-one")
    assert first["name"] == "tests.testapp.policy_tasks:record_context"
    assert first["periodic_id"] is None and first["slot"] is None
    # The deadline is when the worker would stop the run: its start plus max_runtime.
    assert 119 < first["deadline"] - first["now"] <= 120
    assert (third["id"], third["attempt"], third["deadline"]) == (asynchronous.pk, 1, None)


def test_current_task_in_a_reused_child_is_each_task_s_own(start_worker):
    queued = [
        pq.enqueue(policy_tasks.record_context, f"reused {n}", queue="reuse") for n in range(4)
    ]
    run_burst(start_worker, "--concurrency", "1", "--queue", "reuse", "--tasks-per-child", "4")
    seen = contexts()
    assert sorted(c["id"] for c in seen) == sorted(t.pk for t in queued)
    assert len({c["pid"] for c in seen}) < len(seen)  # a child did run several of them


def test_current_task_knows_the_schedule_and_slot(start_worker):
    from datetime import timedelta

    periodic = pq.schedule(policy_tasks.record_context, "scheduled", run_every=timedelta(hours=1))
    fired = periodic.run_now()
    assert fired is not None
    run_burst(start_worker, "--concurrency", "1")
    [seen] = contexts()
    assert seen["periodic_id"] == periodic.pk
    fired.refresh_from_db()
    assert (seen["slot"] is None) == (fired.slot is None)
    if fired.slot is not None:
        assert seen["slot"] == fired.slot.isoformat()


def test_current_task_is_none_outside_a_task():
    assert pq.current_task() is None


# -- RetryLater -----------------------------------------------------------------------


def test_retry_later_runs_the_task_again_within_its_attempts(start_worker):
    task = pq.enqueue(policy_tasks.retry_later, "within", 2, max_attempts=3)
    run_burst(start_worker, "--concurrency", "1")
    task.refresh_from_db()
    assert (task.status, task.attempts, runs("within")) == ("completed", 3, 3)
    assert task.retry_decision["rule"] == "retry_later"
    assert task.error_code == ""  # a completed run clears it; retry_decision keeps the record


def test_retry_later_past_the_budget_fails_with_retry_refused(start_worker):
    task = pq.enqueue(policy_tasks.retry_later, "past", 5, max_attempts=2)
    run_burst(start_worker, "--concurrency", "1")
    task.refresh_from_db()
    assert (task.status, task.error_code, runs("past")) == ("failed", "retry_refused", 2)
    assert "not yet (2)" in task.error
    assert task.retry_decision["rule"] == "budget"


def test_retry_later_that_does_not_count_leaves_attempts_alone(start_worker):
    task = pq.enqueue(policy_tasks.retry_later, "free", 3, False)  # max_attempts 1
    run_burst(start_worker, "--concurrency", "1")
    task.refresh_from_db()
    assert (task.status, task.attempts, runs("free")) == ("completed", 1, 4)


def test_retry_later_waits_its_delay(start_worker):
    later = pq.enqueue(policy_tasks.retry_later_by, 600, max_attempts=2)
    run_burst(start_worker, "--concurrency", "1")
    later.refresh_from_db()
    assert later.status == "pending"
    assert 599 < (later.run_at - later.started_at).total_seconds() < 605


def test_retry_later_outside_a_task_is_refused():
    with pytest.raises(pq.TaskRefused, match="inside a running task"):
        raise pq.RetryLater(delay=5)


# -- progress -------------------------------------------------------------------------


def test_progress_is_visible_while_the_task_runs_and_kept_after(start_worker):
    release = Path(tempfile.mkdtemp()) / "release"
    task = pq.enqueue(policy_tasks.report_progress, 1000, str(release))
    worker = start_worker("--concurrency", "1")
    # The loop reports 1000 steps in a blink; throttled writes land the first at once
    # and the last when the task ends.
    seen = wait_until(lambda: Task.objects.get(pk=task.pk).progress, 30, worker.output)
    assert seen["total"] == 1000 and 1 <= seen["done"] <= 1000
    assert Task.objects.get(pk=task.pk).status == "running"
    release.touch()
    wait_until(lambda: Task.objects.get(pk=task.pk).is_finished, 30, worker.output)
    task.refresh_from_db()
    assert task.status == "completed"
    assert task.progress == {"done": 1000, "total": 1000, "message": "step 1000"}


def test_progress_writes_are_throttled(start_worker):
    release = Path(tempfile.mkdtemp()) / "release"
    release.touch()
    task = pq.enqueue(policy_tasks.count_progress_writes, 2000)
    run_burst(start_worker, "--concurrency", "1")
    task.refresh_from_db()
    assert task.status == "completed", task.error
    writes, elapsed = task.decoded_result()
    # One write at the start, at most one per PROGRESS_INTERVAL after, one at the end.
    assert writes <= 2 + elapsed / 0.5, (writes, elapsed)
    assert task.progress["done"] == 2000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((5, 3), "done cannot exceed total"),
        ((-1,), ">= 0"),
        ((float("nan"),), "finite"),
        ((1, None, 5), "message"),
    ],
)
def test_bad_progress_is_refused_inside_the_task(start_worker, args, message):
    task = pq.enqueue(policy_tasks.bad_progress, list(args))
    run_burst(start_worker, "--concurrency", "1")
    task.refresh_from_db()
    assert task.status == "failed" and message in task.error, task.error
    assert "TaskRefused" in task.error


def test_progress_outside_a_task_is_refused():
    with pytest.raises(pq.TaskRefused, match="inside a running task"):
        pq.set_progress(1, 2)


# -- @pq.task defaults and strict mode -------------------------------------------------


def test_declared_defaults_apply_and_the_call_site_wins(start_worker):
    declared = policy_tasks.declared_flaky.enqueue("declared", 2)
    assert (declared.queue, declared.max_attempts) == ("policies", 3)
    assert declared.retry_policy["on"] == ["exception"]
    overridden = pq.enqueue(
        policy_tasks.declared_flaky, "overridden", 2, queue="policies", max_attempts=1
    )
    assert (overridden.max_attempts, overridden.retry_policy["on"]) == (1, ["exception"])
    run_burst(start_worker, "--concurrency", "1", "--queue", "policies")
    declared.refresh_from_db()
    overridden.refresh_from_db()
    assert (declared.status, runs("declared")) == ("completed", 3)
    assert (overridden.status, runs("overridden")) == ("failed", 1)
    assert policy_tasks.declared_plain(4) == 4  # still a plain function


def test_strict_mode_runs_only_declared_functions(start_worker):
    undeclared = pq.enqueue(tasks.add, 1, 2)
    declared = policy_tasks.declared_plain.enqueue(7)
    run_burst(start_worker, "--concurrency", "1", settings={"PQ_DECLARED_TASKS_ONLY": True})
    undeclared.refresh_from_db()
    declared.refresh_from_db()
    assert (undeclared.status, undeclared.error_code) == ("failed", "unknown_task")
    assert "PQ_DECLARED_TASKS_ONLY" in undeclared.error
    assert (declared.status, declared.decoded_result()) == ("completed", 7)


# -- wait() and keep_result ------------------------------------------------------------


def test_wait_returns_the_task_once_a_worker_has_run_it(start_worker):
    task = pq.enqueue(tasks.add, 2, 3)
    start_worker("--concurrency", "1")
    done = task.wait(timeout=30)
    assert done is task
    assert (task.status, task.decoded_result()) == ("completed", 5)


def test_wait_is_woken_by_the_end_not_by_its_recheck(start_worker, monkeypatch):
    from django_pq import waiting

    # With a recheck far longer than the test, only the notification can end the wait.
    monkeypatch.setattr(waiting, "RECHECK_INTERVAL", 600.0)
    release = Path(tempfile.mkdtemp()) / "release"
    task = pq.enqueue(tasks.wait_for_file, str(release))
    worker = start_worker("--concurrency", "1")
    wait_until(lambda: Task.objects.get(pk=task.pk).status == "running", 30, worker.output)
    release.touch()
    assert task.wait(timeout=60).status == "completed"


@pytest.mark.django_db(transaction=True)
def test_wait_times_out_on_a_task_that_does_not_end():
    task = pq.enqueue(tasks.add, 1, 1)  # no worker runs it
    with pytest.raises(TimeoutError, match=r"has not ended after 0\.2 s"):
        task.wait(timeout=0.2)


@pytest.mark.django_db
def test_wait_inside_a_transaction_is_refused():
    from django.db import transaction

    task = pq.enqueue(tasks.add, 1, 1)
    with transaction.atomic(), pytest.raises(pq.PQError, match="Commit first"):
        task.wait(timeout=1)


def test_keep_result_false_keeps_no_result(start_worker):
    task = pq.enqueue(tasks.add, 2, 2, keep_result=False)
    run_burst(start_worker, "--concurrency", "1")
    task.refresh_from_db()
    assert (task.status, task.result) == ("completed", None)


def test_keep_result_holds_a_task_past_the_retention(start_worker):
    from django.db import connection

    kept = pq.enqueue(tasks.add, 1, 1, keep_result=3 * 86400)
    pruned = pq.enqueue(tasks.add, 1, 2)
    run_burst(start_worker, "--concurrency", "1")
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE pq_tasks SET finished_at = now() - interval '2 days' WHERE id = ANY(%s)",
            [[kept.pk, pruned.pk]],
        )
    # A worker with a one-day retention prunes on start.
    run_burst(start_worker, "--concurrency", "1", settings={"PQ_RETENTION": 86400.0})
    assert Task.objects.filter(pk=kept.pk).exists()
    assert not Task.objects.filter(pk=pruned.pk).exists()
