"""Schedules fired by real workers: one run per slot, no gaps, no overlap, across crashes."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal

from django.utils import timezone

import django_pq as pq
from django_pq.models import Periodic, Task, Worker
from tests.testapp import tasks
from tests.testapp.models import RunLog
from tests.worker.conftest import wait_until


def runs_of(periodic: Periodic) -> list[Task]:
    return list(Task.objects.filter(periodic=periodic).order_by("slot"))


def test_several_workers_fire_each_slot_once_and_miss_none(start_worker):
    workers = [start_worker("--concurrency", "1") for _ in range(3)]
    # Slots missed before any worker runs coalesce by design; count from when all are up.
    wait_until(lambda: Worker.objects.alive().count() == 3, 30, "three workers to register")
    periodic = pq.schedule(tasks.noop, run_every=dt.timedelta(seconds=1), max_concurrent=None)
    wait_until(lambda: len(runs_of(periodic)) >= 6, 30, "six runs of a one-second schedule")
    for worker in workers:
        worker.signal(signal.SIGTERM)
    for worker in workers:
        worker.wait(20)
    slots = [task.slot for task in runs_of(periodic)]
    assert len(slots) == len(set(slots))
    gaps = {(later - earlier).total_seconds() for earlier, later in itertools.pairwise(slots)}
    assert gaps == {1.0}, slots
    assert all(task.status == "completed" for task in runs_of(periodic))


def test_paused_schedule_does_not_fire_and_resumes_without_a_burst(start_worker):
    periodic = pq.schedule(tasks.noop, run_every=dt.timedelta(seconds=1), active=False)
    worker = start_worker()
    wait_until(lambda: Worker.objects.filter(pid=worker.pid).exists())
    # A paused schedule stays silent however long it waits; then one run per slot again.
    with_runs = Task.objects.filter(periodic=periodic)
    assert not with_runs.exists()
    periodic.resume()
    wait_until(lambda: with_runs.filter(status="completed").count() >= 2, 20)
    first, second = runs_of(periodic)[:2]
    assert (second.slot - first.slot).total_seconds() == 1.0


def _run_intervals() -> list[tuple[dt.datetime, dt.datetime | None, int]]:
    """(start, end, pid) of each run of `tasks.sleep`, from the ledger the task writes."""
    starts = {log.pid: log.at for log in RunLog.objects.filter(event="start")}
    ends = {log.pid: log.at for log in RunLog.objects.filter(event="end")}
    return sorted((start, ends.get(pid), pid) for pid, start in starts.items())


def test_slow_runs_never_overlap_and_skips_are_counted(start_worker):
    periodic = pq.schedule(tasks.sleep, 2.5, label="slow", run_every=dt.timedelta(seconds=1))
    start_worker("--concurrency", "2")
    start_worker("--concurrency", "2")
    wait_until(lambda: RunLog.objects.filter(event="end").count() >= 2, 40, "two finished runs")
    intervals = _run_intervals()
    for (_, end, _), (next_start, _, _) in itertools.pairwise(intervals):
        assert end is not None and end <= next_start, intervals
    periodic.refresh_from_db()
    assert periodic.skipped_runs >= 2


def test_no_overlap_when_the_worker_running_it_is_killed(start_worker):
    pq.schedule(tasks.sleep, 30, label="long", run_every=dt.timedelta(seconds=1))
    victim = start_worker("--concurrency", "1")
    first = wait_until(lambda: RunLog.objects.filter(event="start").first(), 30)
    killed_at = timezone.now()  # the ledger's clock: RunLog.at is set by the tasks
    os.kill(victim.pid, signal.SIGKILL)
    start_worker("--concurrency", "1")
    # The next run starts only after the lost one was reaped (its process died with its worker).
    second = wait_until(
        lambda: RunLog.objects.filter(event="start").exclude(pid=first.pid).first(), 40
    )
    assert second.at > killed_at
    lost = Task.objects.get(status="failed")
    assert lost.error_code == "worker_lost"
    assert not os.path.exists(f"/proc/{first.pid}/cmdline") or _is_zombie(first.pid)


def _is_zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "Z"


def test_run_now_is_picked_up_at_once(start_worker):
    periodic = pq.schedule(tasks.add, 2, 3, run_every=dt.timedelta(hours=6))
    worker = start_worker("--poll-interval", "600")
    wait_until(lambda: Worker.objects.filter(pid=worker.pid).exists())
    task = periodic.run_now()
    assert task is not None
    wait_until(lambda: Task.objects.get(pk=task.pk).status == "completed", 10)
    assert Task.objects.get(pk=task.pk).decoded_result() == 5
