"""A worker dying at each named crash point (django_pq/worker/faults.py) loses nothing and
runs nothing twice; another worker reaps what it held."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest

from django_pq.worker.faults import POINTS
from tests.faults.conftest import (
    FIGURES,
    LEDGER_TASK,
    check_invariants,
    enqueue_ledger_tasks,
    wait_until_quiet,
)
from tests.worker.conftest import wait_until


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def orphan_running_row(target) -> int:
    """A task left running by a worker that never registered: work for the reaper."""
    [(task_id,)] = target.query(
        """INSERT INTO pq_tasks (queue, name, payload, priority, run_at, max_attempts, status,
                                 attempts, error, error_code, is_cancel_requested, worker_id,
                                 run_token, started_at)
           VALUES ('default', %s, '{"args": [], "kwargs": {}}', 50, now(), 1, 'running', 1,
                   '', '', false, %s, gen_random_uuid(), now())
           RETURNING id""",
        [LEDGER_TASK, str(uuid.uuid4())],
    )
    return int(task_id)


@pytest.mark.parametrize("point", POINTS)
def test_a_worker_killed_at_a_crash_point_loses_and_duplicates_nothing(test_db, fleet, point):
    once = enqueue_ledger_tasks(test_db, 4, seconds=0.3)
    retrying = enqueue_ledger_tasks(test_db, 4, seconds=0.3, max_attempts=3)
    orphan = orphan_running_row(test_db) if point == "in_reaper" else None

    victim = fleet.start(test_db, "--concurrency", "4", crash_at=f"{point}:kill")
    assert victim.wait(90) == -signal.SIGKILL, victim.tail()
    FIGURES["crash points hit (kill -9)"] += 1
    # Which tasks the victim held depends on how far it got (a child's report can be
    # recorded, and the next batch claimed, before its exit is seen), so read them.
    held = dict(
        test_db.query(
            """SELECT id, max_attempts FROM pq_tasks
               WHERE status = 'running' AND id <> ALL(%s::bigint[])""",
            [[orphan] if orphan else []],
        )
    )
    assert held or orphan is not None, "the victim died holding nothing"
    survivor = fleet.start(test_db, "--concurrency", "4")
    wait_until_quiet(test_db, 90, fleet)

    verdict = check_invariants(test_db, expected_ids=once + retrying)
    assert verdict.statuses["completed"] + verdict.statuses["failed"] == verdict.tasks
    # What the victim held when it died was reaped, by the database clock: a task with no
    # attempt left failed as worker_lost, a retrying one ran again and completed.
    outcomes = test_db.query(
        "SELECT id, status, error_code, attempts FROM pq_tasks WHERE id = ANY(%s)", [list(held)]
    )
    for task_id, status, code, attempts in outcomes:
        if held[task_id] == 1:
            assert (status, code) == ("failed", "worker_lost"), (task_id, verdict)
        else:
            assert status == "completed" and attempts >= 2, (task_id, attempts, verdict)
    if orphan is not None:
        [(status, code)] = test_db.query(
            "SELECT status, error_code FROM pq_tasks WHERE id = %s", [orphan]
        )
        assert (status, code) == ("failed", "worker_lost")
    # Retrying tasks all end up done; none ran more than max_attempts (checked above).
    assert {row[0] for row in test_db.query(
        "SELECT status FROM pq_tasks WHERE id = ANY(%s)", [retrying]
    )} == {"completed"}  # fmt: skip
    assert "Traceback" not in survivor.tail(20000)


def test_a_worker_stalled_before_finishing_has_its_late_writes_refused(test_db, fleet):
    tasks = enqueue_ledger_tasks(test_db, 2, seconds=0.2)
    victim = fleet.start(test_db, "--concurrency", "2", "-v", "2", crash_at="before_finish:stall")
    # The children ran and ended; the parent froze just before committing their outcomes.
    wait_until(
        lambda: (
            test_db.query("SELECT count(*) FROM testapp_faultledger WHERE event = 'end'")[0][0] == 2
        ),
        60,
        "both runs to end",
    )
    wait_until(lambda: process_state(victim.pid) == "T", 30, "the worker to stall")
    fleet.start(test_db, "--concurrency", "1")
    wait_until_quiet(test_db, 60, fleet)
    reaped = test_db.query("SELECT status, error_code FROM pq_tasks ORDER BY id")
    assert reaped == [("failed", "worker_lost")] * 2

    victim.send(signal.SIGCONT)
    wait_until(lambda: victim.output().count("was refused") >= 2, 30, "the late writes")
    # The late "completed" did not overwrite what the reaper decided.
    assert test_db.query("SELECT status, error_code FROM pq_tasks ORDER BY id") == reaped
    check_invariants(test_db, expected_ids=tasks)
