"""pq.Retry with real workers: each way of dying against each rule of a policy."""

from __future__ import annotations

import signal

import pytest

import django_pq as pq
from django_pq.models import Task
from tests.testapp import policy_tasks
from tests.testapp.models import RunLog
from tests.worker.conftest import run_burst, wait_until

#: The ways a run can die that one worker can cause by itself, with the worker flags and
#: task options that make the task die that way.
WAYS = {
    "exception": ((), {}),
    "timeout": ((), {"max_runtime": 0.5}),
    "memory": (("--max-memory", "200"), {}),
    "signal": ((), {}),
}
OTHER = {"exception": "timeout", "timeout": "exception", "memory": "signal", "signal": "memory"}


def runs(key: str) -> int:
    return RunLog.objects.filter(event="attempt", value=key).count()


def drain(start_worker, way: str) -> None:
    flags, _ = WAYS[way]
    run_burst(start_worker, "--concurrency", "1", *flags, timeout=120)


def enqueue_death(way: str, key: str, retry: pq.Retry, times: int = 1_000_000) -> Task:
    return pq.enqueue(policy_tasks.die, way, key, times, retry=retry, **WAYS[way][1])


@pytest.mark.parametrize("way", sorted(WAYS))
def test_a_way_the_policy_names_is_retried(start_worker, way):
    task = enqueue_death(way, "retried", pq.Retry(3, on=[way], delay=0, jitter=0), times=1)
    drain(start_worker, way)
    task.refresh_from_db()
    assert (task.status, task.attempts, runs("retried")) == ("completed", 2, 2), task.error
    # The row keeps how the failed run was judged.
    decision = task.retry_decision
    assert (decision["error_code"], decision["rule"], decision["attempt"]) == (way, "retry", 1)
    assert decision["retry"] is True and decision["next_run"]
    assert task.failure_counts == {way: 1}


@pytest.mark.parametrize("way", sorted(WAYS))
def test_a_way_the_policy_does_not_name_is_final(start_worker, way):
    task = enqueue_death(way, "final", pq.Retry(3, on=[OTHER[way]], delay=0))
    drain(start_worker, way)
    task.refresh_from_db()
    assert (task.status, task.error_code, runs("final")) == ("failed", way, 1)
    assert task.retry_decision["rule"] == "not_on"
    assert task.retry_decision["retry"] is False


@pytest.mark.parametrize("way", sorted(WAYS))
def test_a_limit_per_way_of_dying_holds_whatever_attempts_remain(start_worker, way):
    task = enqueue_death(way, "limited", pq.Retry(10, on=[way], limits={way: 1}, delay=0))
    drain(start_worker, way)
    task.refresh_from_db()
    assert (task.status, task.error_code, runs("limited")) == ("failed", way, 2)
    assert task.retry_decision["rule"] == "limit"
    assert task.failure_counts == {way: 2}


def test_a_task_that_keeps_crashing_is_not_retried_past_its_crash_budget(start_worker):
    # Retry(10) retries every way of dying, yet a crash by signal only twice: a poison
    # task cannot crash-loop workers through a generous max_attempts.
    task = enqueue_death("signal", "poison", pq.Retry(10, delay=0))
    drain(start_worker, "signal")
    task.refresh_from_db()
    assert (task.status, task.error_code, runs("poison")) == ("failed", "signal", 3)
    assert (task.retry_decision["rule"], task.attempts) == ("limit", 3)


def test_attempts_run_out_before_the_way_of_dying_does(start_worker):
    task = enqueue_death("exception", "budget", pq.Retry(3, delay=0))
    drain(start_worker, "exception")
    task.refresh_from_db()
    assert (task.status, runs("budget"), task.retry_decision["rule"]) == ("failed", 3, "budget")
    assert task.failure_counts == {"exception": 3}


@pytest.mark.parametrize(
    ("way", "policy", "rule", "expected_runs"),
    [
        ("key_error", {"exceptions": [LookupError]}, "retry", 3),  # a subclass matches
        ("exception", {"exceptions": [LookupError]}, "not_listed", 1),
        ("key_error", {"ignore": [KeyError]}, "ignored", 1),
        ("key_error", {"exceptions": [Exception], "ignore": [LookupError]}, "ignored", 1),
    ],
)
def test_exception_classes_narrow_what_retries(start_worker, way, policy, rule, expected_runs):
    key = f"{way}-{rule}"
    task = pq.enqueue(policy_tasks.die, way, key, retry=pq.Retry(3, delay=0, **policy))
    run_burst(start_worker, "--concurrency", "1")
    task.refresh_from_db()
    assert (task.status, task.error_code, runs(key)) == ("failed", "exception", expected_runs)
    expected_rule = "budget" if rule == "retry" else rule
    assert task.retry_decision["rule"] == expected_rule


def test_a_lost_worker_is_a_way_of_dying_too(start_worker):
    # The task kills its own worker; a second worker reaps it as worker_lost, and the
    # policy (decided by the reaper's statement, from the row) retries it there.
    task = pq.enqueue(
        policy_tasks.die,
        "worker_lost",
        "lost",
        1,
        retry=pq.Retry(2, on=["worker_lost"], delay=0),
    )
    first = start_worker("--concurrency", "1")
    wait_until(lambda: runs("lost") == 1, 30, first.output)
    assert first.wait(30) != 0  # it was killed by its task
    second = start_worker("--concurrency", "1")
    wait_until(lambda: Task.objects.get(pk=task.pk).is_finished, 30, second.output)
    task.refresh_from_db()
    assert (task.status, runs("lost")) == ("completed", 2), task.error
    assert task.retry_decision["error_code"] == "worker_lost"
    assert task.retry_decision["rule"] == "retry"


def test_backoff_puts_the_retry_ahead_by_the_policy_delay(start_worker):
    task = enqueue_death("exception", "later", pq.Retry(2, delay=600, jitter=0))
    drain(start_worker, "exception")
    task.refresh_from_db()
    assert task.status == "pending"
    wait = (task.run_at - task.started_at).total_seconds()
    assert 599 < wait < 605, wait


def test_a_shutdown_is_a_way_of_dying_too(start_worker):
    # The worker is stopped while the task runs and its drain time runs out: `shutdown`,
    # which this policy retries, on the next worker.
    task = pq.enqueue(
        policy_tasks.die, "timeout", "stopped", 1, retry=pq.Retry(2, on=["shutdown"], delay=0)
    )
    first = start_worker("--concurrency", "1", settings={"PQ_DRAIN_TIMEOUT": 0.2})
    wait_until(lambda: runs("stopped") == 1, 30, first.output)
    first.signal(signal.SIGTERM)
    first.wait(30)
    run_burst(start_worker, "--concurrency", "1")
    task.refresh_from_db()
    assert (task.status, runs("stopped")) == ("completed", 2), task.error
    assert task.retry_decision["error_code"] == "shutdown"
    assert task.retry_decision["rule"] == "retry"
