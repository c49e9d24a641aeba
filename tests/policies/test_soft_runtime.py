"""soft_runtime with real workers: the task is told (pq.TimeLimitExceeded), may clean
up, and is killed at max_runtime if it does not end."""

from __future__ import annotations

import pytest

import django_pq as pq
from tests.testapp import policy_tasks
from tests.testapp.models import RunLog
from tests.worker.conftest import run_burst


def told(key: str) -> int:
    return RunLog.objects.filter(event="soft limit", value=key).count()


def test_a_task_that_catches_the_soft_limit_cleans_up_and_completes(start_worker):
    task = pq.enqueue(policy_tasks.soft_limited, "catch", "c", soft_runtime=0.3, max_runtime=20)
    run_burst(start_worker, "--concurrency", "1")
    task.refresh_from_db()
    assert (task.status, task.decoded_result(), told("c")) == ("completed", "cleaned up", 1)
    assert task.finished_at is not None and task.started_at is not None
    assert (task.finished_at - task.started_at).total_seconds() < 10


def test_an_uncaught_soft_limit_fails_as_soft_timeout(start_worker):
    task = pq.enqueue(policy_tasks.soft_limited, "ignore", "i", soft_runtime=0.3)
    run_burst(start_worker, "--concurrency", "1")
    task.refresh_from_db()
    assert (task.status, task.error_code, told("i")) == ("failed", "soft_timeout", 1)
    assert "TimeLimitExceeded" in task.error


def test_a_task_that_outstays_the_soft_limit_is_killed_at_max_runtime(start_worker):
    task = pq.enqueue(policy_tasks.soft_limited, "outstay", "o", soft_runtime=0.3, max_runtime=1.5)
    run_burst(start_worker, "--concurrency", "1")
    task.refresh_from_db()
    assert (task.status, task.error_code, told("o")) == ("failed", "timeout", 1)


def test_a_soft_timeout_is_a_way_of_dying_a_policy_can_retry(start_worker):
    task = pq.enqueue(
        policy_tasks.soft_limited,
        "ignore",
        "r",
        soft_runtime=0.3,
        retry=pq.Retry(2, on=["soft_timeout"], delay=0),
    )
    run_burst(start_worker, "--concurrency", "1")
    task.refresh_from_db()
    assert (task.status, task.error_code, told("r")) == ("failed", "soft_timeout", 2)
    assert task.retry_decision["rule"] == "budget"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"soft_runtime": 10, "max_runtime": 5}, "must be below max_runtime"),
        ({"soft_runtime": 0}, "soft_runtime must be a positive"),
        ({"soft_runtime": float("nan")}, "soft_runtime must be a positive"),
    ],
)
@pytest.mark.django_db
def test_a_bad_soft_runtime_is_refused(options, message):
    with pytest.raises(pq.TaskRefused, match=message):
        pq.enqueue(policy_tasks.soft_limited, "catch", "x", **options)
