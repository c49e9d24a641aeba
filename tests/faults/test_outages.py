"""The database restarting or away, a worker frozen, clocks skewed: nothing lost or run twice."""

from __future__ import annotations

import signal
import time

import pytest

from tests.faults.conftest import (
    FIGURES,
    LEDGER_TABLE,
    REAP_BOUND,
    check_invariants,
    enqueue_ledger_tasks,
    registered_worker,
    schedule_ledger,
    wait_until_quiet,
)
from tests.worker.conftest import FAST_LIVENESS, pid_alive, wait_until

LEASE = FAST_LIVENESS["PQ_LEASE"]


def started_pids(target, count: int, timeout: float = 60) -> list[int]:
    """Wait for ``count`` runs to have started and not ended; their child pids."""

    def running() -> list[int]:
        rows = target.query(
            f"""SELECT pid FROM {LEDGER_TABLE} s WHERE event = 'start' AND NOT EXISTS (
                    SELECT 1 FROM {LEDGER_TABLE} e WHERE e.event = 'end' AND e.task_id = s.task_id
                      AND e.pid = s.pid)"""
        )
        return [pid for (pid,) in rows] if len(rows) >= count else []

    return wait_until(running, timeout, f"{count} runs to be under way")


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restarted_while_tasks_run(private_db, fleet, mode):
    ids = enqueue_ledger_tasks(private_db, 60, seconds=0.3)
    workers = [fleet.start(private_db, "--concurrency", "2") for _ in range(2)]
    started_pids(private_db, 3)
    assert private_db.cluster is not None
    private_db.cluster.restart(mode)
    FIGURES[f"postgres restarts ({mode})"] += 1
    wait_until_quiet(private_db, 180, fleet)

    verdict = check_invariants(private_db, expected_ids=ids)
    assert set(verdict.statuses) <= {"completed", "failed"}
    # Runs cut off by the restart fail with a reason; the rest completed.
    assert set(verdict.error_codes) <= {"exception", "worker_lost", "signal"}, verdict
    assert verdict.statuses["completed"] >= len(ids) // 2
    for worker in workers:
        assert worker.is_alive(), worker.tail()
        assert "Traceback" not in worker.output().split("Database unavailable")[0]


@pytest.mark.slow
def test_postgres_stopped_longer_than_the_lease(private_db, fleet):
    long_runs = enqueue_ledger_tasks(private_db, 2, seconds=60)
    retried = enqueue_ledger_tasks(private_db, 2, seconds=8, max_attempts=2)
    workers = [fleet.start(private_db, "--concurrency", "2") for _ in range(2)]
    children = started_pids(private_db, 4)
    assert private_db.cluster is not None
    stopped = time.monotonic()
    private_db.cluster.stop("fast")
    FIGURES["postgres stopped past the lease"] += 1
    # The workers cannot renew their leases: they kill their tasks before the lease lapses.
    wait_until(lambda: not any(map(pid_alive, children)), LEASE + 10, "children to die")
    died_within = time.monotonic() - stopped
    assert died_within < LEASE + 1.0, died_within
    wait_until(lambda: time.monotonic() - stopped > 2 * LEASE, 3 * LEASE)
    private_db.cluster.start()
    wait_until_quiet(private_db, 120, fleet)

    check_invariants(private_db, expected_ids=long_runs + retried)
    rows = private_db.query(
        "SELECT id, status, error_code, attempts FROM pq_tasks WHERE id = ANY(%s) ORDER BY id",
        [long_runs],
    )
    assert [(status, code) for _, status, code, _ in rows] == [("failed", "worker_lost")] * 2
    for worker in workers:
        assert worker.is_alive(), worker.tail()


def test_a_worker_frozen_past_its_lease_is_reaped_and_its_late_writes_refused(test_db, fleet):
    [once] = enqueue_ledger_tasks(test_db, 1, seconds=60)
    [retried] = enqueue_ledger_tasks(test_db, 1, seconds=1, max_attempts=2)
    frozen = fleet.start(test_db, "--concurrency", "2")
    children = started_pids(test_db, 2)
    frozen.send(signal.SIGSTOP)
    FIGURES["workers frozen past the lease"] += 1
    # Its children kill themselves when the shared lease clock runs out (LeaseClock).
    wait_until(lambda: not any(map(pid_alive, children)), LEASE + 10, "children to die")
    fleet.start(test_db, "--concurrency", "2")
    wait_until_quiet(test_db, 60, fleet)
    assert test_db.query("SELECT status, error_code FROM pq_tasks WHERE id = %s", [once]) == [
        ("failed", "worker_lost")
    ]
    assert test_db.query("SELECT status FROM pq_tasks WHERE id = %s", [retried]) == [("completed",)]
    before = test_db.query("SELECT id, status, error_code, run_token FROM pq_tasks ORDER BY id")

    frozen.send(signal.SIGCONT)
    wait_until(lambda: frozen.output().count("was refused") >= 2, 30, "the late writes")
    assert test_db.query("SELECT id, status, error_code, run_token FROM pq_tasks ORDER BY id") == (
        before
    )
    wait_until(lambda: "lost its lease" in frozen.output(), 30)
    check_invariants(test_db, expected_ids=[once, retried])


@pytest.mark.parametrize("skew", ["+10m", "-10m"])
def test_a_skewed_clock_next_to_a_true_one_reaps_nothing_early(test_db, fleet, skew):
    # A run longer than two leases on the true worker: a skewed reaper must leave it alone.
    [long_run] = enqueue_ledger_tasks(test_db, 1, seconds=2.5 * LEASE)
    true_worker = fleet.start(test_db, "--concurrency", "1")
    started_pids(test_db, 1)
    skewed = fleet.start(test_db, "--concurrency", "2", faketime=skew)
    registered_worker(test_db, skewed)
    FIGURES["workers with a skewed clock"] += 1
    periodic = schedule_ledger(test_db, 0.5, seconds=0.3)
    wait_until(
        lambda: (
            test_db.query(
                "SELECT count(*) FROM pq_tasks WHERE periodic_id = %s AND status = 'completed'",
                [periodic],
            )[0][0]
            >= 6
        ),
        90,
        "six scheduled runs",
    )
    test_db.query("UPDATE pq_periodic SET active = false")
    wait_until_quiet(test_db, 60, fleet)

    assert test_db.query("SELECT status FROM pq_tasks WHERE id = %s", [long_run]) == [
        ("completed",)
    ]
    verdict = check_invariants(test_db)
    assert verdict.error_codes == {}, verdict
    # max_concurrent=1: the schedule's runs never overlapped, whoever's clock fired them.
    runs = test_db.query(
        f"""SELECT l.event FROM {LEDGER_TABLE} l JOIN pq_tasks t ON t.id = l.task_id
            WHERE t.periodic_id = %s ORDER BY l.at, l.id""",
        [periodic],
    )
    events = [event for (event,) in runs]
    assert events == ["start", "end"] * (len(events) // 2)
    assert true_worker.is_alive() and skewed.is_alive()
    assert "Reaping" not in true_worker.output() + skewed.output()
    assert REAP_BOUND > LEASE
