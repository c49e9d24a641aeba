"""Many workers, producers, upserters and staff at once: every task runs once, none is lost."""

from __future__ import annotations

import random
import time

import pytest

from tests.faults.conftest import (
    FIGURES,
    LEDGER_TABLE,
    SCALE,
    check_invariants,
    enqueue_ledger_tasks,
    finish_helper,
    postgres_log_problems,
    run_helper,
    scaled,
    schedule_ledger,
    unfinished,
    wait_until_quiet,
)
from tests.worker.conftest import wait_until

WORKERS = 8
#: The issue's sizes, run at DJANGO_PQ_FAULT_SCALE (see conftest).
INITIAL_TASKS = 10_000
PRODUCED_TASKS = 10_000


def start_racing_fleet(fleet, target, count: int = WORKERS) -> list:
    return [fleet.start(target, "--concurrency", "2") for _ in range(count)]


def drain_timeout(tasks: int) -> float:
    return 120 + tasks / 10  # at worst 10 tasks a second on a loaded 2-core machine


def test_racing_workers_and_producers_run_every_task_exactly_once(private_db, fleet):
    initial = enqueue_ledger_tasks(private_db, scaled(INITIAL_TASKS))
    start_racing_fleet(fleet, private_db)
    producers = [
        run_helper(private_db, "produce", "--count", str(scaled(PRODUCED_TASKS)), "--key", f"p{n}")
        for n in range(2)
    ]
    started = time.monotonic()
    produced = [finish_helper(producer)["ids"] for producer in producers]
    all_ids = initial + produced[0] + produced[1]
    FIGURES["tasks enqueued"] += len(all_ids) - len(initial)
    wait_until_quiet(private_db, drain_timeout(len(all_ids)), fleet)
    FIGURES["race: seconds to run"] += round(time.monotonic() - started)

    verdict = check_invariants(private_db, expected_ids=all_ids)
    assert verdict.statuses == {"completed": len(all_ids)}
    assert verdict.runs == len(all_ids) and verdict.tasks_run_more_than_once == 0
    assert postgres_log_problems(private_db) == []
    for worker in fleet.workers:
        assert "Traceback" not in worker.output(), worker.tail()


@pytest.mark.slow
def test_chaos_kill_9_and_terminated_connections_lose_and_duplicate_nothing(private_db, fleet):
    rng = random.Random(8)
    initial = enqueue_ledger_tasks(private_db, scaled(INITIAL_TASKS), seconds=0.01)
    workers = start_racing_fleet(fleet, private_db)
    producers = [
        run_helper(private_db, "produce", "--count", str(scaled(PRODUCED_TASKS)), "--key", f"c{n}")
        for n in range(2)
    ]
    deadline = time.monotonic() + drain_timeout(3 * scaled(INITIAL_TASKS))
    kills = terminations = 0
    # Chaos until the producers are done and half of what they made has run.
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(1.0, 3.0))
        victim = rng.choice([worker for worker in workers if worker.is_alive()])
        victim.kill()
        kills += 1
        workers.append(fleet.start(private_db, "--concurrency", "2"))
        terminated = private_db.query(
            """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE application_name LIKE 'pq_worker:%%' ORDER BY random() LIMIT 1"""
        )
        terminations += len(terminated)
        if all(p.poll() is not None for p in producers) and sum(unfinished(private_db)) < (
            scaled(PRODUCED_TASKS)
        ):
            break
    produced = [finish_helper(producer)["ids"] for producer in producers]
    FIGURES["chaos: workers kill -9ed"] += kills
    FIGURES["chaos: connections terminated"] += terminations
    all_ids = initial + produced[0] + produced[1]
    FIGURES["tasks enqueued"] += len(all_ids) - len(initial)
    wait_until_quiet(private_db, drain_timeout(len(all_ids)), fleet)

    verdict = check_invariants(private_db, expected_ids=all_ids)
    FIGURES["chaos: tasks lost to worker_lost"] += verdict.error_codes["worker_lost"]
    assert verdict.tasks == len(all_ids)
    assert set(verdict.statuses) <= {"completed", "failed"}
    assert set(verdict.error_codes) <= {"worker_lost", "signal", "exception"}, verdict
    assert kills >= 2
    assert postgres_log_problems(private_db) == []
    fleet.stop_all()
    fleet.assert_nothing_left_behind()


def test_four_producers_upserting_one_client_id_never_overlap_and_the_last_version_wins(
    test_db, fleet
):
    for _ in range(2):
        fleet.start(test_db, "--concurrency", "2")
    upserts = scaled(250, minimum=250)
    upserters = [
        run_helper(
            test_db,
            "upsert",
            "--count",
            str(upserts),
            "--client-id",
            "one",
            "--key",
            f"u{n}",
            "--seconds",
            "0.02",
        )
        for n in range(4)
    ]
    for upserter in upserters:
        finish_helper(upserter)
    FIGURES["upserts of one client_id"] += 4 * upserts
    import django_pq as pq
    from tests.testapp import tasks

    pq.upsert(tasks.ledger, 0.02, key="final", client_id="one")
    wait_until(
        lambda: (
            test_db.query("SELECT status, result FROM pq_tasks WHERE client_id = 'one'")
            == [("completed", "final")]
        ),
        120,
        "the final version to run",
    )
    runs = test_db.query(
        f"SELECT event, key, pid, run_token::text FROM {LEDGER_TABLE} ORDER BY at, id"
    )
    # Never two runs at once: starts and ends alternate, each pair from one process.
    events = [event for event, *_ in runs]
    assert events == ["start", "end"] * (len(runs) // 2), runs[:20]
    for start, end in zip(runs[::2], runs[1::2], strict=True):
        assert start[1:] == end[1:], (start, end)
    keys = [key for event, key, *_ in runs if event == "start"]
    assert keys[-1] == "final" and keys.count("final") == 1
    assert len(keys) == len(set(keys)), "a version ran twice"
    tokens = [token for event, _, _, token in runs if event == "start"]
    assert len(tokens) == len(set(tokens))
    FIGURES["upsert: versions run"] += len(keys)
    [(task_id,)] = test_db.query("SELECT id FROM pq_tasks WHERE client_id = 'one'")
    # One row, many versions: each version runs at most once (asserted above).
    check_invariants(test_db, runs_allowed={task_id: len(keys)})


def test_staff_actions_racing_workers_duplicate_and_lose_nothing(test_db, fleet):
    ids = enqueue_ledger_tasks(test_db, scaled(10_000, minimum=200), seconds=0.05)
    periodic = schedule_ledger(test_db, 0.5, seconds=0.2)
    for _ in range(3):
        fleet.start(test_db, "--concurrency", "2")
    staff = [
        run_helper(
            test_db,
            "staff",
            "--ids",
            ",".join(map(str, ids)),
            "--schedule",
            str(periodic),
            "--seconds",
            str(max(8, 60 * SCALE)),
            "--seed",
            str(n),
        )
        for n in range(2)
    ]
    reports = [finish_helper(actor) for actor in staff]
    test_db.query("UPDATE pq_periodic SET active = false")
    wait_until_quiet(test_db, drain_timeout(len(ids)), fleet)

    retried: dict[int, int] = {}
    for report in reports:
        for task_id, times in report["retried"].items():
            retried[int(task_id)] = retried.get(int(task_id), 0) + times
        for action, count in report["done"].items():
            FIGURES[f"staff: {action}"] += count
    verdict = check_invariants(
        test_db,
        runs_allowed={task_id: 1 + retried.get(task_id, 0) for task_id in ids},
        expected_ids=ids,
    )
    assert set(verdict.statuses) <= {"completed", "cancelled", "failed"}
    assert sum(report["done"]["retry"] for report in reports) > 0
    assert verdict.statuses["cancelled"] > 0
    # Each run of a task held its own token: no run shared a claim with another.
    shared = test_db.query(
        f"""SELECT task_id, run_token, count(*) FROM {LEDGER_TABLE}
            WHERE event = 'start' AND run_token IS NOT NULL
            GROUP BY task_id, run_token HAVING count(*) > 1"""
    )
    assert shared == []
