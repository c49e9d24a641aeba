"""--tasks-per-child: one fork runs several tasks in turn, with isolation kept per child."""

from __future__ import annotations

import django_pq as pq
from django_pq.models import Task
from tests.testapp import tasks
from tests.worker.conftest import run_burst


def results(tasks_: list[Task]) -> list[object]:
    return [Task.objects.get(pk=task.pk).decoded_result() for task in tasks_]


def test_a_child_runs_up_to_n_tasks_then_is_replaced(start_worker):
    enqueued = [pq.enqueue(tasks.pid) for _ in range(10)]
    run_burst(start_worker, "--concurrency", "1", "--tasks-per-child", "5")
    assert Task.objects.completed().count() == 10
    pids = results(enqueued)
    assert len(set(pids)) == 2 and pids[:5] == [pids[0]] * 5


def test_a_crash_costs_only_its_own_child(start_worker):
    first = [pq.enqueue(tasks.pid, priority=90) for _ in range(3)]
    crash = pq.enqueue(tasks.segfault, priority=80)
    stuck = pq.enqueue(tasks.sleep, 30, priority=70, max_runtime=1)
    after = [pq.enqueue(tasks.pid, priority=60) for _ in range(3)]
    run_burst(start_worker, "--concurrency", "1", "--tasks-per-child", "100")
    crash.refresh_from_db()
    stuck.refresh_from_db()
    assert (crash.status, crash.error_code) == ("failed", "signal")
    assert (stuck.status, stuck.error_code) == ("failed", "timeout")
    before_pids, after_pids = set(results(first)), set(results(after))
    assert len(before_pids) == 1 and len(after_pids) == 1 and before_pids != after_pids
    assert Task.objects.completed().count() == 6


def test_a_child_that_grows_past_the_limit_is_replaced_early(start_worker):
    leaky = [pq.enqueue(tasks.leak, 40) for _ in range(6)]
    run_burst(
        start_worker, "--concurrency", "1", "--tasks-per-child", "100", "--max-child-memory", "150"
    )
    pids = results(leaky)
    assert Task.objects.completed().count() == 6
    assert 2 <= len(set(pids)) < 6


def test_reused_children_record_resource_use_per_task(start_worker):
    enqueued = [pq.enqueue(tasks.add, n, n) for n in range(4)]
    run_burst(start_worker, "--concurrency", "2", "--tasks-per-child", "4")
    for task in enqueued:
        task.refresh_from_db()
        assert task.status == "completed" and task.peak_rss > 0 and task.cpu_seconds >= 0
