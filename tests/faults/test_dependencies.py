"""Tasks that wait for tasks, under fire: kill -9ed workers, terminated connections, a
PostgreSQL restart and hand-broken structures never run a callback twice or never, never
start a dependent early and never leave a task blocked whose dependencies all ended.

The structures are built through the public API (``pq.chain``, ``pq.batch``,
``pq.enqueue(after=...)``) by a short builder process against the test's database, so the
same code serves the test database and a private cluster. Every judgement reads the rows
and the run ledger; "a completed run" is a ledger start and end written under one run
token by one process (a kill -9ed run has no end).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from typing import Any

import psycopg
import pytest

from tests.faults.conftest import (
    FIGURES,
    LEDGER_TABLE,
    LEDGER_TASK,
    REPO,
    SCALE,
    Fleet,
    Target,
    _django_env,
    check_invariants,
    postgres_log_problems,
    scaled,
    unfinished,
    wait_until_quiet,
)
from tests.worker.conftest import wait_until

#: Full sizes (scale 1); the default scale keeps the chaos at 20 chains and 10 batches.
CHAINS = 700
STEPS = 5
BATCHES = 350
MEMBERS = 30
CALLBACKS = ("on_success", "on_failure", "on_finish")
CALLBACK_ATTEMPTS = 4  # a kill -9 may hit a callback: it retries, and runs to the end once
ENDED = ("completed", "failed", "cancelled")


def long_above_default_scale(test: Any) -> Any:
    """At the default scale a scenario of the normal suite; above it, a ``slow`` one."""
    return pytest.mark.slow(test) if SCALE > 0.03 else test


# -- building structures through the API, in a process of its own ----------------------

BUILDER = r"""
import json, sys
import django
django.setup()
import django_pq as pq
from tests.testapp import tasks

def prepare(step):
    options = {"max_attempts": step.get("max_attempts", 1)}
    if "after" in step:
        options["after"] = step["after"]
        options["run_anyway"] = step.get("run_anyway", False)
    if step["kind"] == "ledger":
        return pq.prepare(tasks.ledger, step["seconds"], key=step["key"], **options)
    if step["kind"] == "raise":
        return pq.prepare(tasks.raise_error, **options)
    if step["kind"] == "fail_until":
        return pq.prepare(tasks.fail_until, step["succeed_at"], step["key"], **options)
    raise ValueError(step)

spec = json.load(sys.stdin)
out = {"chains": [], "batches": [], "tasks": [], "cancelled": []}
for steps in spec.get("chains", []):
    out["chains"].append([t.pk for t in pq.chain(*map(prepare, steps))])
for made in spec.get("batches", []):
    handle = pq.batch(
        [prepare(m) for m in made["members"]],
        **{name: prepare(cb) for name, cb in made.get("callbacks", {}).items()},
    )
    out["batches"].append({
        "id": handle.id,
        "members": [t.pk for t in handle.tasks],
        **{name: getattr(handle, name).pk for name in made.get("callbacks", {})},
    })
for task in spec.get("tasks", []):
    out["tasks"].append(pq.enqueue_many([prepare(task)])[0].pk)
for batch_id in spec.get("cancel_batches", []):
    out["cancelled"] += [task_id for task_id, _ in pq.cancel_batch(batch_id)]
print(json.dumps(out))
"""


def build(target: Target, spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``BUILDER`` on ``spec`` against ``target``; the ids it wrote."""
    done = subprocess.run(
        [sys.executable, "-c", BUILDER],
        cwd=REPO,
        env=_django_env(target.url),
        input=json.dumps(spec).encode(),
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-4000:]
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def ledger_step(key: str, seconds: float, attempts: int = 3) -> dict[str, Any]:
    return {"kind": "ledger", "seconds": seconds, "key": key, "max_attempts": attempts}


def callbacks(tag: str) -> dict[str, dict[str, Any]]:
    return {name: ledger_step(f"{tag}:{name}", 0.02, CALLBACK_ATTEMPTS) for name in CALLBACKS}


# -- reading the outcome -----------------------------------------------------------------


def statuses(target: Target) -> dict[int, tuple[str, str]]:
    return {
        task_id: (status, code)
        for task_id, status, code in target.query("SELECT id, status, error_code FROM pq_tasks")
    }


def ledger_by_task(target: Target) -> dict[int, dict[str, Any]]:
    """Per task: its starts, its completed runs' (start, end), and every event's moment."""
    found: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"starts": [], "completed": [], "events": []}
    )
    for task_id, event, at in target.query(
        f"SELECT task_id, event, extract(epoch FROM at)::float8 FROM {LEDGER_TABLE}"
    ):
        found[task_id]["events"].append(at)
        if event == "start":
            found[task_id]["starts"].append(at)
    for task_id, start, end in target.query(
        f"""SELECT s.task_id, extract(epoch FROM s.at)::float8, extract(epoch FROM e.at)::float8
            FROM {LEDGER_TABLE} s JOIN {LEDGER_TABLE} e
              ON e.task_id = s.task_id AND e.event = 'end' AND e.run_token = s.run_token
                 AND e.pid = s.pid
            WHERE s.event = 'start' AND s.run_token IS NOT NULL"""
    ):
        found[task_id]["completed"].append((start, end))
    return found


def blocked_with_all_dependencies_ended(target: Target) -> list[tuple[int, list[Any]]]:
    """Blocked tasks none of whose dependencies is still to end (they should be decided)."""
    return target.query(
        """SELECT t.id, array_agg(ARRAY[x.id::text, x.status, e.satisfied::text])
           FROM pq_tasks t JOIN pq_dependencies e ON e.task_id = t.id
           JOIN pq_tasks x ON x.id = e.depends_on_id
           WHERE t.status = 'blocked'
           GROUP BY t.id
           HAVING bool_and(x.status IN ('completed', 'failed', 'cancelled'))"""
    )


def unsatisfied_edges_of_ended_tasks(target: Target) -> list[tuple[int, int, str]]:
    return target.query(
        """SELECT e.task_id, e.depends_on_id, x.status FROM pq_dependencies e
           JOIN pq_tasks x ON x.id = e.depends_on_id
           WHERE NOT e.satisfied AND x.status IN ('completed', 'failed', 'cancelled')"""
    )


def early_starts(
    runs: dict[int, dict[str, Any]], waits: dict[int, list[int]]
) -> list[tuple[int, float, int, float]]:
    """(dependent, its first start, dependency, the moment it beat) for every dependent
    that started before the latest completed-run end, or any start, of what it waited for."""
    early = []
    for task_id, dependencies in waits.items():
        if not runs[task_id]["starts"]:
            continue
        first = min(runs[task_id]["starts"])
        for dependency in dependencies:
            ends = [end for _, end in runs[dependency]["completed"]]
            moments = ends + runs[dependency]["starts"]
            if moments and max(moments) > first:
                early.append((task_id, first, dependency, max(moments)))
    return early


def worker_log_lines(fleet: Fleet, needle: str) -> list[str]:
    return [
        line for worker in fleet.workers for line in worker.output().splitlines() if needle in line
    ]


def log_summary(fleet: Fleet) -> str:
    """Per worker: alive or not, its Tracebacks, and its log's lines that are not a
    traceback's, counted (for a failure's message)."""
    parts = []
    for worker in fleet.workers:
        text = worker.output()
        lines = Counter(
            line[:200]
            for line in text.splitlines()
            if line and not line.startswith((" ", "Traceback", "During", "CONTEXT", "SQL", "PL/"))
        )
        parts.append(
            f"worker {worker.pid} alive={worker.is_alive()} "
            f"tracebacks={text.count('Traceback')} runs started={text.count('Started task')}: "
            f"{lines.most_common(6)}"
        )
    return "\n".join(parts)


def terminate_worker_connections(target: Target, limit: int) -> int:
    return len(
        target.query(
            """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE application_name LIKE 'pq_worker:%%' ORDER BY random() LIMIT %s""",
            [limit],
        )
    )


class Expectations:
    """What the outcome must be, given how each member and step actually ended."""

    def __init__(self, target: Target, built: dict[str, Any]) -> None:
        self.rows = statuses(target)
        self.runs = ledger_by_task(target)
        self.problems: list[str] = []
        self.waits: dict[int, list[int]] = defaultdict(list)
        for task_id, depends_on in target.query(
            "SELECT task_id, depends_on_id FROM pq_dependencies"
        ):
            self.waits[task_id].append(depends_on)
        self.callbacks_run = self.callbacks_skipped = 0
        self.batches_failed = 0
        self.chains_broken = 0

    def expect(self, task_id: int, status: str, code: str, *, runs: int | None) -> None:
        found = self.rows.get(task_id)
        if found != (status, code):
            self.problems.append(f"task {task_id} is {found}, expected {(status, code)}")
        if runs is None:
            return
        completed = len(self.runs[task_id]["completed"]) if task_id in self.runs else 0
        starts = len(self.runs[task_id]["starts"]) if task_id in self.runs else 0
        if runs == 0 and (task_id in self.runs and self.runs[task_id]["events"]):
            self.problems.append(f"task {task_id} should never run; ledger has {starts} starts")
        elif runs and completed != runs:
            self.problems.append(
                f"task {task_id} has {completed} completed runs ({starts} starts), expected {runs}"
            )

    def batch(self, made: dict[str, Any]) -> None:
        ends = [self.rows[m][0] for m in made["members"]]
        if any(end not in ENDED for end in ends):
            self.problems.append(f"batch {made['id']} has members not ended: {ends}")
        succeeded = all(end == "completed" for end in ends)
        self.batches_failed += not succeeded
        ran = {
            "on_success": succeeded,
            "on_failure": not succeeded,
            "on_finish": True,
        }
        for name, runs in ran.items():
            if name not in made:
                continue
            if runs:
                self.expect(made[name], "completed", "", runs=1)
                self.callbacks_run += 1
            else:
                code = "cancelled" if name == "on_failure" else "dependency_failed"
                self.expect(made[name], "cancelled", code, runs=0)
                self.callbacks_skipped += 1

    def chain(self, steps: list[int]) -> None:
        broken = False
        for step in steps:
            status, _ = self.rows[step]
            if broken:
                self.expect(step, "cancelled", "dependency_failed", runs=0)
            elif status != "completed":
                broken = True
                self.chains_broken += 1
                if status != "failed":
                    self.problems.append(f"chain step {step} is {self.rows[step]}")

    def timing(self, only: set[int] | None = None) -> list[tuple[int, float, int, float]]:
        """Early starts among the dependents (``only`` these, when given)."""
        waits = {t: d for t, d in self.waits.items() if only is None or t in only}
        return early_starts(self.runs, waits)


# -- 1. chaos ----------------------------------------------------------------------------


def chaos_spec(rng: random.Random, chains: int, batches: int) -> dict[str, Any]:
    """Chains of ledger steps (every fourth breaks at its third step), batches of ledger
    members with all three callbacks (every third has a member that always fails and one
    that fails once, then succeeds on a retry)."""
    chain_specs = []
    for n in range(chains):
        steps = [ledger_step(f"chain{n}:{s}", rng.uniform(0.01, 0.08)) for s in range(STEPS)]
        if n % 4 == 1:
            steps[2] = {"kind": "raise"}
        chain_specs.append(steps)
    batch_specs = []
    for n in range(batches):
        members = [
            ledger_step(f"batch{n}:m", rng.uniform(0.01, 0.08), rng.choice([1, 3]))
            for _ in range(MEMBERS)
        ]
        if n % 3 == 1:
            members[7] = {"kind": "raise", "max_attempts": 2}
            members[11] = {
                "kind": "fail_until",
                "succeed_at": 2,
                "key": f"batch{n}:retry",
                "max_attempts": 3,
            }
        batch_specs.append({"members": members, "callbacks": callbacks(f"batch{n}")})
    return {"chains": chain_specs, "batches": batch_specs}


def joiners(built: dict[str, Any]) -> dict[str, Any]:
    """Tasks enqueued with after= on the last steps of two chains; half run_anyway."""
    chains = built["chains"]
    tasks = []
    for n in range(0, len(chains) - 1, 2):
        tasks.append(
            {
                **ledger_step(f"join{n}", 0.01),
                "after": [chains[n][-1], chains[n + 1][-1]],
                "run_anyway": n % 4 == 0,
            }
        )
    return {"tasks": tasks}


@long_above_default_scale
def test_chaos_runs_every_callback_once_and_no_dependent_early(private_db, fleet):
    rng = random.Random(17)
    chains = scaled(CHAINS, minimum=20)
    batches = scaled(BATCHES, minimum=10)
    built = build(private_db, chaos_spec(rng, chains, batches))
    # Only chains with no failing step get a run_anyway=False joiner that can run.
    built["tasks"] = build(private_db, joiners(built))["tasks"]
    [(total,)] = private_db.query("SELECT count(*) FROM pq_tasks")
    all_ids = [task_id for (task_id,) in private_db.query("SELECT id FROM pq_tasks")]
    FIGURES["tasks enqueued"] += total

    def start() -> Any:
        return fleet.start(private_db, "--concurrency", "2")

    workers = [start() for _ in range(scaled(8, minimum=4))]
    kills = terminations = cancelled_batches = 0
    started = time.monotonic()
    deadline = started + 120 + total / 10
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.3, 1.0))
        if rng.random() < 0.5:
            rng.choice([worker for worker in workers if worker.is_alive()]).kill()
            kills += 1
            workers.append(start())
        terminations += terminate_worker_connections(private_db, rng.choice([1, 2]))
        if not cancelled_batches and kills >= 1:
            # One batch cancelled mid-drain: its on_failure and on_finish must still run.
            build(private_db, {"cancel_batches": [built["batches"][-1]["id"]]})
            cancelled_batches += 1
        left = sum(unfinished(private_db))
        if kills >= 3 and left <= total // 5:
            break
    wait_until_quiet(private_db, 120 + total / 10, fleet)
    # Quiet is no pending or running row: a blocked row that should be decided shows below.
    seconds = round(time.monotonic() - started)

    found = Expectations(private_db, built)
    for made in built["batches"]:
        found.batch(made)
    for steps in built["chains"]:
        found.chain(steps)
    for joiner in built["tasks"]:
        deps = found.waits[joiner]
        ended = [found.rows[d][0] for d in deps]
        anyway = built["tasks"].index(joiner) % 2 == 0
        if anyway or all(e == "completed" for e in ended):
            found.expect(joiner, "completed", "", runs=1)
        else:
            found.expect(joiner, "cancelled", "dependency_failed", runs=0)
    early = found.timing()
    deadlocks = worker_log_lines(fleet, "deadlock detected")
    FIGURES["dependencies: chains"] += len(built["chains"])
    FIGURES["dependencies: chains broken by a failure"] += found.chains_broken
    FIGURES["dependencies: batches"] += len(built["batches"])
    FIGURES["dependencies: batches that failed"] += found.batches_failed
    FIGURES["dependencies: callbacks run"] += found.callbacks_run
    FIGURES["dependencies: callbacks skipped"] += found.callbacks_skipped
    FIGURES["dependencies: after= joiners"] += len(built["tasks"])
    FIGURES["dependencies chaos: workers kill -9ed"] += kills
    FIGURES["dependencies chaos: connections terminated"] += terminations
    FIGURES["dependencies chaos: seconds to run"] += seconds
    FIGURES["dependencies chaos: deadlocks in worker logs"] += len(deadlocks)

    assert found.problems == [], "\n".join(found.problems[:30])
    assert early == [], f"dependents started early: {early[:10]}"
    assert blocked_with_all_dependencies_ended(private_db) == []
    assert unsatisfied_edges_of_ended_tasks(private_db) == []
    assert private_db.query("SELECT id FROM pq_tasks WHERE status = 'blocked'") == []
    verdict = check_invariants(private_db, expected_ids=all_ids)
    assert verdict.tasks == total
    assert set(verdict.statuses) <= {"completed", "failed", "cancelled"}, verdict.statuses
    # The chaos reached the structures: retries happened, failures broke chains and batches.
    assert verdict.tasks_run_more_than_once >= 1, verdict
    assert found.chains_broken >= chains // 4 and found.batches_failed >= batches // 3
    assert found.callbacks_run >= 2 * batches
    assert kills >= 3 and terminations >= 3
    assert deadlocks == [], f"{len(deadlocks)} deadlocks: {deadlocks[:5]}"
    assert postgres_log_problems(private_db) == []
    fleet.stop_all()
    fleet.assert_nothing_left_behind()


# -- 2. PostgreSQL restarted while members run -------------------------------------------


def members_left(target: Target, batch_id: int) -> int:
    [(left,)] = target.query(
        "SELECT count(*) FROM pq_tasks WHERE batch_id = %s AND status IN ('pending', 'running')",
        [batch_id],
    )
    return int(left)


def test_postgres_restarted_while_members_run_releases_each_callback_once(private_db, fleet):
    built = build(
        private_db,
        {
            "batches": [
                {
                    "members": [ledger_step("restart:m", 0.25) for _ in range(40)],
                    "callbacks": callbacks("restart"),
                },
            ],
        },
    )
    [made] = built["batches"]
    all_ids = [task_id for (task_id,) in private_db.query("SELECT id FROM pq_tasks")]
    workers = [fleet.start(private_db, "--concurrency", "2") for _ in range(2)]
    assert private_db.cluster is not None
    # Once mid-way, once as the last members end (the ends that release the callbacks).
    wait_until(lambda: members_left(private_db, made["id"]) <= 30, 60, "members to run")
    private_db.cluster.restart("immediate")
    FIGURES["postgres restarts (immediate)"] += 1
    wait_until(lambda: members_left(private_db, made["id"]) <= 3, 120, "the last members to run")
    private_db.cluster.restart("immediate")
    FIGURES["postgres restarts (immediate)"] += 1
    wait_until(
        lambda: (
            private_db.query("SELECT count(*) FROM pq_tasks WHERE status = 'blocked'") == [(0,)]
        ),
        120,
        "the callbacks to be decided",
    )
    wait_until_quiet(private_db, 120, fleet)

    found = Expectations(private_db, built)
    found.batch(made)
    assert found.problems == [], "\n".join(found.problems)
    assert found.timing() == []
    assert blocked_with_all_dependencies_ended(private_db) == []
    assert unsatisfied_edges_of_ended_tasks(private_db) == []
    verdict = check_invariants(private_db, expected_ids=all_ids)
    assert set(verdict.error_codes) <= {"exception", "worker_lost", "signal"}, verdict
    FIGURES["dependencies restart: callbacks run"] += found.callbacks_run
    for worker in workers:
        assert worker.is_alive(), worker.tail()
        assert "Traceback" not in worker.output().split("Database unavailable")[0]


# -- 3. structures broken by hand ----------------------------------------------------------


def insert_ledger_row(
    conn: psycopg.Connection[Any], status: str, key: str, *, kind: str = "", seconds: float = 0.01
) -> int:
    name = "tests.testapp.tasks:raise_error" if kind == "raise" else LEDGER_TASK
    payload = (
        {"args": [], "kwargs": {}}
        if kind == "raise"
        else {"args": [seconds], "kwargs": {"key": key}}
    )
    [(task_id,)] = conn.execute(
        """INSERT INTO pq_tasks (queue, name, payload, priority, run_at, max_attempts,
                                 status, attempts, error, error_code, is_cancel_requested,
                                 has_dependents)
           VALUES ('default', %s, %s::jsonb, 50, now(), 1, %s, 0, '', '', false, true)
           RETURNING id""",
        [name, json.dumps(payload), status],
    ).fetchall()
    return int(task_id)


def test_hand_made_cycles_and_dangling_edges_leave_the_workers_unharmed(private_db, fleet):
    workers = [fleet.start(private_db, "--concurrency", "2") for _ in range(2)]
    with private_db.connect() as conn:
        # The trigger refuses a cycle written by hand.
        a = insert_ledger_row(conn, "blocked", "cycle")
        b = insert_ledger_row(conn, "blocked", "cycle")
        conn.execute(
            "INSERT INTO pq_dependencies (task_id, depends_on_id, satisfied, is_fresh) "
            "VALUES (%s, %s, false, true)",
            [a, b],
        )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO pq_dependencies (task_id, depends_on_id, satisfied, is_fresh) "
                "VALUES (%s, %s, false, true)",
                [b, a],
            )
        # With the trigger disabled: a two-task blocked cycle, and a cycle through tasks
        # that will run and end (one fails, one completes), so the ending transactions'
        # recursive walks meet a loop.
        # One transaction: the entries become claimable only with their loops in place,
        # and the trigger is enabled again by the same commit.
        with conn.transaction():
            conn.execute(
                "ALTER TABLE pq_dependencies DISABLE TRIGGER pq_dependencies_acyclic_insert"
            )
            fails = insert_ledger_row(conn, "pending", "", kind="raise")
            completes = insert_ledger_row(conn, "pending", "loop-ok")
            after_fail = insert_ledger_row(conn, "blocked", "after-fail")
            after_ok = insert_ledger_row(conn, "blocked", "after-ok")
            edges = [
                (b, a),
                (after_fail, fails),
                (fails, after_fail),
                (after_ok, completes),
                (completes, after_ok),
            ]
            for waiting, waited_for in edges:
                conn.execute(
                    "INSERT INTO pq_dependencies (task_id, depends_on_id, satisfied, is_fresh) "
                    "VALUES (%s, %s, false, true)",
                    [waiting, waited_for],
                )
            conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no deferred checks pending
            conn.execute(
                "ALTER TABLE pq_dependencies ENABLE TRIGGER pq_dependencies_acyclic_insert"
            )
        assert conn.execute(
            "SELECT tgname, tgenabled FROM pg_trigger "
            "WHERE tgname LIKE 'pq_dependencies_acyclic%%' ORDER BY tgname"
        ).fetchall() == [
            ("pq_dependencies_acyclic_insert", "O"),
            ("pq_dependencies_acyclic_update", "O"),
        ]
        # A blocked task waiting for a task that does not exist (the links bypassed).
        dangling = insert_ledger_row(conn, "blocked", "dangling")
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "INSERT INTO pq_dependencies (task_id, depends_on_id, satisfied, is_fresh) "
            "VALUES (%s, 987654321, false, true)",
            [dangling],
        )
        conn.execute("SET session_replication_role = DEFAULT")
        conn.execute("SELECT pg_notify('django_pq', 't:0:default')")
    FIGURES["dependencies: hand-broken structures"] += 3

    # Other work keeps flowing beside them: plain tasks, a chain and a batch.
    built = build(
        private_db,
        {
            "chains": [[ledger_step(f"flow-chain:{s}", 0.02) for s in range(3)]],
            "batches": [
                {
                    "members": [ledger_step("flow:m", 0.02) for _ in range(20)],
                    "callbacks": callbacks("flow"),
                }
            ],
            "tasks": [ledger_step("flow:plain", 0.01) for _ in range(20)],
        },
    )
    made = built["batches"][0]
    ours = {
        *built["chains"][0],
        *built["tasks"],
        *made["members"],
        *(made[name] for name in CALLBACKS),
    }
    wait_until(
        lambda: all(statuses(private_db)[t][0] in ENDED for t in ours),
        90,
        lambda: f"the other work to finish: {statuses(private_db)}\n" + log_summary(fleet),
    )
    found = Expectations(private_db, built)
    found.batch(made)
    found.chain(built["chains"][0])
    for task_id in built["tasks"]:
        found.expect(task_id, "completed", "", runs=1)
    assert found.problems == [], "\n".join(found.problems)
    assert found.timing(only=ours) == []

    # The loops' entries ran: their ends are recorded, whatever loop their edges close.
    wait_until(
        lambda: (
            private_db.query(
                "SELECT status FROM pq_tasks WHERE id = ANY(%s) ORDER BY id", [[fails, completes]]
            )
            == [("failed",), ("completed",)]
        ),
        30,
        lambda: (
            f"the loops' entries to end: {statuses(private_db)}\n{log_summary(fleet)}\n"
            + "\n".join(worker_log_lines(fleet, "would wait for itself")[:4])
        ),
    )
    # A failed loop task put back by hand runs and fails again, cancelling its waiter again.
    private_db.query(
        "UPDATE pq_tasks SET status = 'pending', finished_at = NULL, error = '', "
        "error_code = '', attempts = 0 WHERE id = %s",
        [fails],
    )
    private_db.query("SELECT pg_notify('django_pq', 't:0:default')")
    wait_until_quiet(private_db, 60, fleet)
    found = Expectations(private_db, built)
    rows = statuses(private_db)
    # The blocked cycle and the dangling task stay blocked; the failed entry ended twice.
    assert [rows[t] for t in (a, b, dangling)] == [("blocked", "")] * 3
    assert rows[fails] == ("failed", "exception")
    assert rows[after_fail] == ("cancelled", "dependency_failed")
    assert rows[completes] == ("completed", "")
    # It waited only for the entry, which ran (blocked rows never stop a pending one).
    found.expect(after_ok, "completed", "", runs=1)
    assert found.problems == [], "\n".join(found.problems)
    assert found.timing(only={after_ok}) == []
    for worker in workers:
        assert worker.is_alive(), worker.tail()
        assert "Traceback" not in worker.output(), worker.tail()
    assert worker_log_lines(fleet, "deadlock detected") == []
    assert postgres_log_problems(private_db) == []


def test_a_loop_written_by_hand_under_a_running_task_lets_its_end_be_recorded(private_db, fleet):
    """A hand-written loop through a task that is already running: its end (marking its
    waiter's edge satisfied) must still be recorded, and its worker carry on."""
    worker = fleet.start(private_db, "--concurrency", "2")
    with private_db.connect() as conn:
        entry = insert_ledger_row(conn, "pending", "loop-entry", seconds=2.0)
        waiter = insert_ledger_row(conn, "blocked", "loop-waiter")
        conn.execute("SELECT pg_notify('django_pq', 't:0:default')")
        wait_until(lambda: statuses(private_db)[entry][0] == "running", 30, "the entry to run")
        with conn.transaction():
            conn.execute(
                "ALTER TABLE pq_dependencies DISABLE TRIGGER pq_dependencies_acyclic_insert"
            )
            for waiting, waited_for in [(waiter, entry), (entry, waiter)]:
                conn.execute(
                    "INSERT INTO pq_dependencies (task_id, depends_on_id, satisfied, is_fresh) "
                    "VALUES (%s, %s, false, true)",
                    [waiting, waited_for],
                )
            conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
            conn.execute(
                "ALTER TABLE pq_dependencies ENABLE TRIGGER pq_dependencies_acyclic_insert"
            )
    FIGURES["dependencies: hand-broken structures"] += 1
    wait_until(
        lambda: statuses(private_db)[entry][0] != "running",
        30,
        lambda: (
            f"the entry's end to be recorded: {statuses(private_db)}\n{log_summary(fleet)}\n"
            + "\n".join(worker_log_lines(fleet, "would wait for itself")[:2])
        ),
    )
    wait_until_quiet(private_db, 30, fleet)
    rows = statuses(private_db)
    assert rows[entry] == ("completed", "") and rows[waiter] == ("completed", ""), rows
    assert worker.is_alive() and "Traceback" not in worker.output(), log_summary(fleet)
