"""The worker is total over its inputs: no row and no notification stops it.

Hypothesis generates values for every column of ``pq_tasks``, ``pq_periodic`` and
``pq_workers`` (``tests/faults/inputs.py``: NULLs, infinite and far timestamps, NaN and
huge floats, extreme integers, odd text and JSON, names of modules that raise or exit on
import, crons that never fire, ...) and writes them with raw SQL, as another program or a
hostile database writer would; it sends generated payloads on the channel from a
separate connection. Three real ``pq_worker`` processes (one plain, one reusing children,
one serving only ``default``) run throughout, started once for the test; a worker that
died is restarted before the next example, so each example is judged alone and a
failure shrinks to the smallest row or notification that causes it.

Per example, it asserts:

- every worker is still alive, after at least one heartbeat and one firing pass saw the
  inputs;
- healthy tasks enqueued through the API alongside complete (and a ``c:<id>``
  notification for one of them, from a role that merely connects, cancels nothing);
- every due schedule is handled: fired, skipped (``next_run`` moved on) or disabled;
- every task row a worker can claim ends settled with the precise outcome its name and
  payload call for (``unknown_task`` for a name that leads to no runnable function,
  whatever its import does; ``bad_payload`` for undecodable arguments; ``timeout`` when a
  limit is due), and every running row of a dead worker is reaped;
- rows no worker may touch stay as they are: pending rows whose ``run_at`` lies ahead
  (``'infinity'``: never claimable, left pending by design), finished rows, and running
  rows held by a worker row whose lease has not lapsed;
- no running row is held by a worker row whose lease lies more than a day ahead (such a
  lease never lapses in practice, so the row would be stuck running for good).

A value Postgres refuses (a CHECK constraint, a type's range, a unique key) is not one the
schema admits: that row is skipped. So the test holds before and after migrations that
add constraints. ``DJANGO_PQ_FAULT_SCALE`` scales the number of examples (CI: 6;
scale 1: 200).
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import django_pq as pq
from django_pq.codec import decode_payload
from django_pq.models import ErrorCode
from tests.faults.conftest import FIGURES, LEDGER_TABLE, SCALE, Fleet, Target, registered_worker
from tests.faults.inputs import (
    ALLOWED_MODULES,
    CANCEL_HEALTHY,
    NOTIFICATIONS,
    Inputs,
    Row,
    build_row,
    expected_for_name,
    hypothesis_chooser,
    insert,
    notify,
)
from tests.testapp import tasks
from tests.worker.conftest import wait_until

EXAMPLES = max(6, round(200 * SCALE))
CHANNEL = "django_pq"
#: The workers' own limit (--max-runtime): it must end a sleeping task whatever its row says.
WORKER_MAX_RUNTIME = 3.0
#: Generous: a busy 2-core machine shared with other test runs.
SETTLE_TIMEOUT = 90.0
WORKER_ARGS = [
    ("--concurrency", "2", "--max-runtime", str(WORKER_MAX_RUNTIME)),
    ("--concurrency", "2", "--tasks-per-child", "3", "--max-runtime", str(WORKER_MAX_RUNTIME)),
    ("--concurrency", "1", "--queue", "default", "--max-runtime", str(WORKER_MAX_RUNTIME)),
]
WORKER_SETTINGS = {
    "PQ_ALLOWED_MODULES": ALLOWED_MODULES,
    # A lease long enough that a loaded machine never reaps a healthy task: here a
    # worker_lost is an input's doing, never the clock's.
    "PQ_LEASE": 15.0,
}
FINAL = {"completed", "failed", "cancelled"}

settings.register_profile(
    "django-pq-total-inputs",
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    # Each example runs real processes for seconds; explaining would rerun it many times.
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


class WorkerPool:
    """The test's workers: started once, and restarted before an example if one died."""

    def __init__(self, target: Target, fleet: Fleet) -> None:
        self.target, self.fleet = target, fleet
        self.current: list[Any] = []
        self.worker_ids: list[str] = []
        for args in WORKER_ARGS:
            worker, worker_id = self._start(args)
            self.current.append(worker)
            self.worker_ids.append(worker_id)

    def _start(self, args: tuple[str, ...]) -> tuple[Any, str]:
        worker = self.fleet.start(self.target, *args, "-v", "2", settings=WORKER_SETTINGS)
        return worker, registered_worker(self.target, worker)

    def revive(self) -> None:
        for position, worker in enumerate(self.current):
            if not worker.is_alive():
                self.current[position], self.worker_ids[position] = self._start(
                    WORKER_ARGS[position]
                )

    def dead(self) -> list[Any]:
        return [worker for worker in self.current if not worker.is_alive()]

    def ids(self) -> list[str]:
        """The live workers' ids (each keeps its id for the life of its process)."""
        return list(self.worker_ids)


@st.composite
def hostile_inputs(draw: Any) -> Inputs:
    choose = hypothesis_chooser(draw)
    count = st.integers(0, 3)
    return Inputs(
        workers=[build_row("pq_workers", choose) for _ in range(draw(st.integers(0, 2)))],
        periodics=[build_row("pq_periodic", choose) for _ in range(draw(st.integers(0, 2)))],
        tasks=[build_row("pq_tasks", choose) for _ in range(draw(count) + 1)],
        notifications=draw(st.lists(NOTIFICATIONS, max_size=4)),
    )


@dataclass
class Expectation:
    """What one inserted task row must come to, decided from the row as Postgres stored it."""

    row_id: int
    category: str  # claimable, orphan, future, finished, held, held_forever
    outcomes: set[str] = field(default_factory=set)
    status: str = ""
    attempts: int = 0
    run_token: str | None = None
    prunable: bool = False


def expected_outcomes(name: str, payload_text: str, max_runtime: float | None) -> set[str]:
    """The outcomes a run of this row may end with: "completed" or an error code."""
    kind = expected_for_name(name)
    if kind.startswith("unknown_task"):
        return set(kind.split(" or "))
    try:
        decode_payload(json.loads(payload_text))
    except Exception:  # whatever the codec raises, the payload is undecodable
        return {"bad_payload"}
    outcomes = {
        "completed": {"completed"},
        "either": {"completed", "exception"},
        "sleep": {"completed", "timeout"},
    }.get(kind, {kind})
    if max_runtime is not None and math.isfinite(max_runtime) and max_runtime < 5:
        outcomes.add("timeout")  # a limit that short may end even a quick task
    return outcomes


def _read(conn: Any, statement: str, params: Any) -> list[tuple[Any, ...]]:
    return list(conn.execute(statement, params).fetchall())


def expect(conn: Any, rows: list[Row]) -> list[Expectation]:
    """Classify each inserted task row; read in the inserting transaction, so no worker
    has claimed it yet."""
    ids = [row.id for row in rows if row.id is not None]
    found = _read(
        conn,
        """SELECT t.id, t.status, t.run_at <= now(), t.name, t.payload::text, t.max_runtime,
                  t.attempts, t.max_attempts, t.requeue IS NOT NULL, t.run_token::text,
                  t.finished_at < now() - interval '7 days',
                  CASE WHEN w.id IS NULL OR w.stopped_at IS NOT NULL
                            OR w.lease_expires_at < now() THEN 'lapsed'
                       WHEN w.lease_expires_at > now() + interval '1 day' THEN 'forever'
                       WHEN w.lease_expires_at < now() + interval '20 seconds' THEN 'soon'
                       ELSE 'later' END
           FROM pq_tasks t LEFT JOIN pq_workers w ON w.id = t.worker_id
           WHERE t.id = ANY(%s)""",
        [ids],
    )
    expectations = []
    for (
        row_id,
        status,
        due,
        name,
        payload,
        max_runtime,
        attempts,
        max_attempts,
        parked,
        token,
        prunable,
        lease,
    ) in found:
        runs = expected_outcomes(name, payload, max_runtime)
        if parked:  # a parked version replaces the row when its run ends: any outcome
            runs = {"completed", *ErrorCode.values}
        exp = Expectation(row_id, "", set(), status, attempts, token, bool(prunable))
        if status in FINAL:
            exp.category = "finished"
        elif status == "pending":
            exp.category, exp.outcomes = ("claimable", runs) if due else ("future", set())
        elif lease in {"lapsed", "soon"}:
            retried = runs if attempts < max_attempts or parked else set()
            exp.category, exp.outcomes = "orphan", {"worker_lost", *retried}
        else:
            exp.category = "held_forever" if lease == "forever" else "held"
        expectations.append(exp)
    return expectations


def fired_expectations(target: Target, periodic_ids: list[int]) -> list[Expectation]:
    rows = target.query(
        """SELECT id, name, payload::text, max_runtime FROM pq_tasks
           WHERE periodic_id = ANY(%s) AND attempts = 0 AND status = 'pending'""",
        [periodic_ids],
    )
    return [
        Expectation(row_id, "claimable", expected_outcomes(name, payload, runtime), "pending")
        for row_id, name, payload, runtime in rows
    ]


def task_states(target: Target, ids: list[int]) -> dict[int, tuple[Any, ...]]:
    rows = target.query(
        """SELECT id, status, attempts, error_code, run_token::text, error FROM pq_tasks
           WHERE id = ANY(%s)""",
        [ids],
    )
    return {row[0]: row[1:] for row in rows}


def is_settled(exp: Expectation, state: tuple[Any, ...] | None) -> bool:
    if state is None:  # deleted: only pruning deletes, and only old finished rows
        return exp.category == "finished" and exp.prunable
    status, attempts, code, token, _ = state
    if exp.category == "claimable":
        return status in FINAL or (attempts > exp.attempts and code != "")
    if exp.category == "orphan":
        return token != exp.run_token or status != "running"
    return True


def due_schedules(conn: Any, rows: list[Row]) -> dict[int, Any]:
    ids = [row.id for row in rows if row.id is not None]
    found = _read(
        conn,
        "SELECT id, next_run::text FROM pq_periodic WHERE id = ANY(%s) AND active "
        "AND next_run <= now()",
        [ids],
    )
    return dict(found)


def unhandled_schedules(target: Target, due: dict[int, Any]) -> list[int]:
    """Due schedules that neither fired, nor moved ``next_run`` on, nor were disabled."""
    if not due:
        return []
    rows = target.query(
        """SELECT p.id, p.active, p.next_run::text,
                  EXISTS (SELECT 1 FROM pq_tasks t WHERE t.periodic_id = p.id)
           FROM pq_periodic p WHERE p.id = ANY(%s)""",
        [list(due)],
    )
    return [
        periodic_id
        for periodic_id, active, next_run, fired in rows
        if active and next_run == due[periodic_id] and not fired
    ]


def heartbeats_since(target: Target, pool: WorkerPool, since: Any) -> bool:
    ids = pool.ids()
    [(count,)] = target.query(
        "SELECT count(*) FROM pq_workers WHERE id::text = ANY(%s) AND heartbeat_at > %s",
        [ids, since],
    )
    return count == len(pool.current) == len(ids)


def describe_deaths(pool: WorkerPool) -> str:
    return "\n".join(
        f"worker {' '.join(w.args)} (pid {w.pid}) exited {w.process.returncode}:\n{w.tail(2500)}"
        for w in pool.dead()
    )


def run_example(target: Target, pool: WorkerPool, inputs: Inputs) -> None:
    pool.revive()
    conn = target.connect()
    fakes: list[str] = []
    healthy: list[Any] = []
    periodic_ids: list[int] = []
    try:
        with conn.transaction():
            for row in inputs.workers:
                if insert(conn, row):
                    fakes.append(row.id)
            for row in inputs.periodics:
                if insert(conn, row):
                    periodic_ids.append(row.id)
            for position, row in enumerate(inputs.tasks):
                insert(conn, row, fakes[position % len(fakes)] if fakes else None)
            expectations = expect(conn, inputs.tasks)
            due = due_schedules(conn, inputs.periodics)
            conn.execute("SELECT pg_notify(%s, 's:')", [CHANNEL])
        rows = inputs.workers + inputs.periodics + inputs.tasks
        FIGURES["total inputs: rows inserted"] += sum(row.id is not None for row in rows)
        FIGURES["total inputs: rows refused by Postgres"] += sum(bool(row.refused) for row in rows)

        # Healthy work beside the hostile rows: one long enough to be running while the
        # notifications arrive, one at the lowest priority, behind everything else.
        running = pq.enqueue(tasks.ledger, 1.0, key="healthy")
        behind = pq.enqueue(tasks.ledger, key="healthy-last", priority=0)
        healthy = [running.pk, behind.pk]
        with contextlib.suppress(AssertionError):
            wait_until(
                lambda: (
                    pool.dead()
                    or target.query(
                        f"SELECT 1 FROM {LEDGER_TABLE} WHERE task_id = %s", [running.pk]
                    )
                ),
                SETTLE_TIMEOUT,
            )
        for payload in inputs.notifications:
            text = f"c:{running.pk}" if payload == CANCEL_HEALTHY else payload
            FIGURES["total inputs: notifications sent"] += notify(conn, CHANNEL, text)
        [(sent_at,)] = target.query("SELECT now()")

        watched = [exp for exp in expectations if exp.category in {"claimable", "orphan"}]

        def settled() -> bool:
            nonlocal watched
            watched = watched + [
                exp
                for exp in fired_expectations(target, periodic_ids)
                if exp.row_id not in {w.row_id for w in watched}
            ]
            states = task_states(target, [exp.row_id for exp in watched] + healthy)
            return (
                all(states.get(pk, ("",))[0] in FINAL for pk in healthy)
                and all(is_settled(exp, states.get(exp.row_id)) for exp in watched)
                and not unhandled_schedules(target, due)
                and heartbeats_since(target, pool, sent_at)
            )

        with contextlib.suppress(AssertionError):
            wait_until(lambda: pool.dead() or settled(), SETTLE_TIMEOUT)
        # One more heartbeat of every worker with the rows as they are now.
        [(settled_at,)] = target.query("SELECT now()")
        with contextlib.suppress(AssertionError):
            wait_until(
                lambda: pool.dead() or heartbeats_since(target, pool, settled_at), SETTLE_TIMEOUT
            )

        FIGURES["total inputs: examples"] += 1
        FIGURES["total inputs: worker exits"] += len(pool.dead())
        assert not pool.dead(), f"a worker exited:\n{describe_deaths(pool)}"

        states = task_states(target, healthy)
        assert [states[pk][:1] for pk in healthy] == [("completed",)] * 2, (
            f"healthy tasks did not complete: {[states.get(pk) for pk in healthy]}"
        )

        unhandled = unhandled_schedules(target, due)
        assert not unhandled, f"due schedules neither fired nor moved on: {unhandled}"

        states = task_states(target, [exp.row_id for exp in expectations + watched])
        unsettled = [
            (exp.category, exp.row_id, states.get(exp.row_id))
            for exp in watched
            if not is_settled(exp, states.get(exp.row_id))
        ]
        assert not unsettled, f"rows a worker should have finished are not: {unsettled}"

        wrong = []
        for exp in watched:
            status, _, code, _, error = states[exp.row_id]
            outcome = "completed" if status == "completed" else code
            if outcome and outcome not in exp.outcomes:
                wrong.append((exp.row_id, status, code, sorted(exp.outcomes), error[-300:]))
        assert not wrong, f"rows that ended otherwise than their input calls for: {wrong}"

        touched = [
            (exp.category, exp.row_id, exp.status, states.get(exp.row_id))
            for exp in expectations
            if exp.category in {"future", "finished", "held"}
            and not (
                (states.get(exp.row_id) or ("",))[0] == exp.status
                or (states.get(exp.row_id) is None and exp.prunable)
            )
        ]
        assert not touched, f"rows no worker may touch were changed: {touched}"

        forever = [exp.row_id for exp in expectations if exp.category == "held_forever"]
        assert not forever, (
            f"running rows {forever} are held by a pq_workers row whose lease lies more than "
            "a day ahead: they stay running for good"
        )
    finally:
        _clean_up(target, pool, conn, inputs, (healthy, periodic_ids), fakes)


def _clean_up(
    target: Target,
    pool: WorkerPool,
    conn: Any,
    inputs: Inputs,
    made: tuple[list[int], list[int]],
    fakes: list[str],
) -> None:
    """Remove the example's rows, stopping what still runs of them first."""
    healthy, periodics = made
    ids = [row.id for row in inputs.tasks if row.id is not None] + healthy
    conn.execute("UPDATE pq_periodic SET active = false WHERE id = ANY(%s)", [periodics])
    conn.execute(
        """UPDATE pq_tasks SET is_cancel_requested = true
           WHERE status = 'running' AND (id = ANY(%s) OR periodic_id = ANY(%s))""",
        [ids, periodics],
    )
    with contextlib.suppress(AssertionError):
        wait_until(
            lambda: (
                not target.query(
                    """SELECT 1 FROM pq_tasks t JOIN pq_workers w ON w.id = t.worker_id
                   WHERE t.status = 'running' AND w.id::text = ANY(%s)
                     AND (t.id = ANY(%s) OR t.periodic_id = ANY(%s))""",
                    [pool.ids(), ids, periodics],
                )
            ),
            15,
        )
    with conn.transaction():
        conn.execute(
            "DELETE FROM pq_tasks WHERE id = ANY(%s) OR periodic_id = ANY(%s)", [ids, periodics]
        )
        conn.execute("DELETE FROM pq_periodic WHERE id = ANY(%s)", [periodics])
    conn.execute("DELETE FROM pq_workers WHERE id::text = ANY(%s)", [fakes])
    conn.close()


def test_no_row_or_notification_stops_a_worker(test_db, fleet):
    pool = WorkerPool(test_db, fleet)

    @settings(settings.get_profile("django-pq-total-inputs"))
    @given(hostile_inputs())
    def every_input(inputs: Inputs) -> None:
        run_example(test_db, pool, inputs)

    every_input()
