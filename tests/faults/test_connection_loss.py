"""The worker's connection lost at every statement it runs, at both moments that matter.

For each name in ``django_pq.worker.faults.STATEMENTS`` and each of ``MOMENTS`` (``sent``:
the statement reached the server and its reply is lost; ``committed``: it committed, the
reply was read, and then the connection dies), a real worker runs real tasks while
``DJANGO_PQ_CUT_CONNECTION`` cuts its real connection at that point. Then the invariants:
nothing lost, nothing run more often than allowed (the run ledger), nothing left running
past the lease, and the worker still alive and serving. A statement added to the worker
without a scenario here fails ``test_every_worker_statement_has_a_scenario``.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from django_pq.worker.faults import CUT_VARIABLE, MOMENTS, STATEMENTS
from tests.faults.conftest import (
    LEDGER_TASK,
    Fleet,
    Target,
    check_invariants,
    enqueue_ledger_tasks,
    schedule_ledger,
    wait_until_quiet,
)
from tests.worker.conftest import wait_until

try:
    from django.tasks import task  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    from django_tasks import task

#: The django.tasks backend scenario: a worker that can import this module's task.
BACKEND_SETTINGS: dict[str, Any] = {
    "TASKS": {"default": {"BACKEND": "django_pq.backend.PQBackend", "QUEUES": []}},
    "PQ_ALLOWED_MODULES": ["tests.testapp", "tests.faults.test_connection_loss"],
}


@task
def backend_ledger(seconds: float) -> str:
    """A django.tasks task that records its run in the fault ledger."""
    from tests.testapp.tasks import ledger

    return ledger(seconds, key="backend")


@dataclass
class Scenario:
    """How to make a worker run one statement, and what else must hold afterwards."""

    args: tuple[str, ...] = ("--concurrency", "2")
    settings: dict[str, Any] = field(default_factory=dict)
    tasks: int = 4
    seconds: float = 0.3  # how long each ledger task runs
    max_attempts: int = 2
    nth: int = 1  # cut at this run of the statement
    prepare: Callable[[Target], list[int]] | None = None  # more rows; returns ids to keep
    act: Callable[[Target, Fleet, Any, list[int]], None] | None = None  # while it runs
    expect_exit: bool = False  # the worker stops by itself (--max-tasks) or is stopped


def _dead_workers_tasks(target: Target) -> list[int]:
    """Ledger tasks left ``running`` by a worker that never registered: reap them."""
    payload = json.dumps({"args": [0.0], "kwargs": {"key": "reaped"}})
    rows = target.query(
        """INSERT INTO pq_tasks (queue, name, payload, priority, run_at, max_attempts,
               status, attempts, error, error_code, is_cancel_requested, worker_id,
               run_token, started_at)
           SELECT 'default', %s, %s::jsonb, 50, now(), 2, 'running', 1, '', '', false,
                  %s, gen_random_uuid(), now()
           FROM generate_series(1, 3) RETURNING id""",
        [LEDGER_TASK, payload, uuid.uuid4()],
    )
    return [row[0] for row in rows]


def _old_finished_tasks(target: Target) -> list[int]:
    target.query(
        """INSERT INTO pq_tasks (queue, name, payload, priority, run_at, max_attempts,
               status, attempts, error, error_code, is_cancel_requested, finished_at)
           SELECT 'default', 'x:y', '{}'::jsonb, 50, now(), 1, 'completed', 1, '', '', false,
                  now() - interval '30 days'
           FROM generate_series(1, 20)"""
    )
    target.query(
        """INSERT INTO pq_workers (id, hostname, pid, queues, priorities, concurrency,
               started_at, heartbeat_at, lease_expires_at, version)
           VALUES (%s, 'gone', 1, '[]', '[]', 1, now() - interval '9 days',
                   now() - interval '9 days', now() - interval '9 days', 'old')""",
        [uuid.uuid4()],
    )
    return []


def _a_schedule(target: Target) -> list[int]:
    schedule_ledger(target, 3600, seconds=0.0)
    return []


def _wait_for_start(target: Target, task_id: int) -> None:
    wait_until(
        lambda: target.query(
            "SELECT 1 FROM testapp_faultledger WHERE task_id = %s AND event = 'start'", [task_id]
        ),
        60,
        "the victim to start",
    )


def _cancel_a_running_task(target: Target, fleet: Fleet, worker: Any, ids: list[int]) -> None:
    victim = ids[0]
    _wait_for_start(target, victim)
    target.query(
        """WITH c AS (UPDATE pq_tasks SET is_cancel_requested = true
                      WHERE id = %s AND status = 'running' RETURNING id)
           SELECT pg_notify('django_pq', 'c:' || id) FROM c""",
        [victim],
    )


def _stop(target: Target, fleet: Fleet, worker: Any, ids: list[int]) -> None:
    wait_until_quiet(target, 120, fleet)
    worker.send(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.tail()


def _park_an_unusable_version(target: Target, fleet: Fleet, worker: Any, ids: list[int]) -> None:
    """A version parked on a running row that cannot be applied (no name): the batch
    fails, each outcome is written alone, and the bad version is discarded."""
    victim = ids[0]
    _wait_for_start(target, victim)
    target.query("UPDATE pq_tasks SET requeue = '{}'::jsonb WHERE id = %s", [victim])


SCENARIOS: dict[str, Scenario] = {
    "register": Scenario(),
    "claim": Scenario(),
    "finish": Scenario(args=("--concurrency", "1", "--max-tasks", "1"), tasks=1, expect_exit=True),
    "finish_claim": Scenario(tasks=6),
    "finish_one": Scenario(
        args=("--concurrency", "1"), tasks=2, seconds=3, act=_park_an_unusable_version
    ),
    "heartbeat": Scenario(nth=2, tasks=3),
    "reap": Scenario(prepare=_dead_workers_tasks),
    "orphans": Scenario(),
    "cancel_check": Scenario(
        args=("--concurrency", "1"),
        # Heartbeats far apart, so the notification (not the heartbeat) finds the cancel.
        settings={"PQ_HEARTBEAT_INTERVAL": 5.0, "PQ_LEASE": 15.0},
        tasks=2,
        seconds=10,
        act=_cancel_a_running_task,
    ),
    "fire": Scenario(prepare=_a_schedule),
    "prune_tasks": Scenario(settings={"PQ_RETENTION": 86400}, prepare=_old_finished_tasks),
    "prune_workers": Scenario(settings={"PQ_RETENTION": 86400}, prepare=_old_finished_tasks),
    "deregister": Scenario(act=_stop, expect_exit=True),
}


def test_every_worker_statement_has_a_scenario() -> None:
    assert sorted(SCENARIOS) == sorted(STATEMENTS)


def _run(
    target: Target,
    fleet: Fleet,
    statement: str,
    moment: str,
    scenario: Scenario,
    extra_args: tuple[str, ...] = (),
) -> Any:
    kept = scenario.prepare(target) if scenario.prepare else []
    ids = enqueue_ledger_tasks(
        target, scenario.tasks, seconds=scenario.seconds, max_attempts=scenario.max_attempts
    )
    worker = fleet.start(
        target,
        *scenario.args,
        *extra_args,
        settings=scenario.settings,
        env={CUT_VARIABLE: f"{statement}:{moment}:{scenario.nth}"},
    )
    if scenario.act:
        scenario.act(target, fleet, worker, ids)
    needle = f"Fault injection: {statement} {moment}"
    try:
        wait_until(lambda: needle in worker.output(), 120, f"the cut at {statement} ({moment})")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{worker.tail()}") from None
    if scenario.expect_exit:
        assert worker.wait(120) == 0, worker.tail()
        # A worker that stopped by itself leaves the rest to the next one.
        fleet.start(target, "--concurrency", "2", settings=scenario.settings)
    wait_until_quiet(target, 120, fleet)
    verdict = check_invariants(target, expected_ids=ids + kept)
    if not scenario.expect_exit:
        assert worker.is_alive(), worker.tail()
    # Still serving after the cut.
    later = enqueue_ledger_tasks(target, 1, max_attempts=1)
    try:
        wait_until(
            lambda: target.query(
                "SELECT 1 FROM pq_tasks WHERE id = %s AND status = 'completed'", [later[0]]
            ),
            60,
            "a task enqueued after the cut to complete",
        )
    except AssertionError as error:
        row = target.query("SELECT status, error_code, error FROM pq_tasks WHERE id = %s", later)
        raise AssertionError(f"{error}: {row}\n{fleet.workers[-1].tail()}") from None
    return verdict


# Every statement x moment is a real worker losing a real connection: minutes in all,
# so in the `slow` selection, which CI always runs.
@pytest.mark.slow
@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.parametrize("statement", STATEMENTS)
def test_connection_lost_at_statement(test_db, fleet, statement, moment) -> None:
    _run(test_db, fleet, statement, moment, SCENARIOS[statement])
    if statement == "cancel_check":
        [(status,)] = test_db.query(
            "SELECT status FROM pq_tasks ORDER BY id LIMIT 1"
        )  # the heartbeat confirms the cancel the lost reply could not
        assert status == "cancelled"


@pytest.mark.slow
@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.parametrize(
    "statement",
    [
        "finish_claim",
        "claim",
        "heartbeat",
    ],
)
def test_connection_lost_with_reused_children(test_db, fleet, statement, moment) -> None:
    _run(test_db, fleet, statement, moment, SCENARIOS[statement], ("--tasks-per-child", "3"))


@pytest.mark.slow
@pytest.mark.parametrize("moment", MOMENTS)
def test_connection_lost_at_finish_through_the_django_tasks_backend(
    test_db, fleet, settings, moment
) -> None:
    settings.TASKS = BACKEND_SETTINGS["TASKS"]
    settings.PQ_ALLOWED_MODULES = BACKEND_SETTINGS["PQ_ALLOWED_MODULES"]
    result = backend_ledger.enqueue(0.2)
    worker = fleet.start(
        test_db,
        "--concurrency",
        "1",
        "--max-tasks",
        "1",
        settings=BACKEND_SETTINGS,
        env={CUT_VARIABLE: f"finish:{moment}"},
    )
    assert worker.wait(120) == 0, worker.tail()
    assert f"Fault injection: finish {moment}" in worker.output()
    check_invariants(test_db, expected_ids=[int(result.id)])
    result.refresh()
    assert result.return_value == "backend"
    assert dt.datetime.now(dt.UTC) >= result.finished_at
