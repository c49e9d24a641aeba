"""A stateful property test: any interleaving of the operations on tasks and schedules
moves each row only along the state machine in docs/reference/schema.md, against the real database.

Claim, finish and reap use the worker's own SQL (django_pq/store/worker.py) for two
pretend workers; enqueue, upsert, cancel, retry, pause and resume use the public API.
"""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import django_pq as pq
from django_pq.store import worker as sql
from django_pq.worker.config import WorkerConfig
from tests.faults.conftest import FIGURES, Target
from tests.testapp import tasks

#: The status machine: pending -> running -> completed | failed | cancelled; running -> pending
#: (retry with backoff, or a parked upsert); failed/cancelled -> pending (a staff retry).
#: cancel() also finishes a pending task at once (pending -> cancelled).
ALLOWED = {
    ("pending", "running"),
    ("pending", "cancelled"),
    ("running", "completed"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("running", "pending"),
    ("failed", "pending"),
    ("cancelled", "pending"),
}
#: upsert() documents that it also resets a finished task to pending, completed included.
ALLOWED_BY_UPSERT = ALLOWED | {("completed", "pending")}
CLIENT_IDS = ["a", "b"]
OUTCOMES = [
    ("completed", ""),
    ("failed", "exception"),
    ("failed", "timeout"),
    ("failed", "unknown_task"),
    ("cancelled", "cancelled"),
]


class TaskLifecycle(RuleBasedStateMachine):
    def __init__(self, target: Target) -> None:
        super().__init__()
        self.db = target
        self.db.query("TRUNCATE pq_tasks, pq_periodic, pq_workers RESTART IDENTITY CASCADE")
        self.config = WorkerConfig(concurrency=2, lease=30, heartbeat_interval=1)
        self.workers = [str(uuid.uuid4()), str(uuid.uuid4())]
        for worker in self.workers:
            self._register(worker)
        self.schedule = pq.schedule(tasks.noop, run_every=60, key=uuid.uuid4().hex)
        self.last = self._snapshot()
        self.last_rule = ""

    def _register(self, worker: str) -> None:
        self.db.query(
            sql.REGISTER,
            {"id": worker, "hostname": "h", "pid": 1, "queues": "[]", "priorities": "[]",
             "min_priority": None, "concurrency": 2, "lease": 30, "version": "test"},
        )  # fmt: skip

    def _snapshot(self) -> dict[int, tuple[str, str | None]]:
        return {
            task_id: (status, token)
            for task_id, status, token in self.db.query(
                "SELECT id, status, run_token::text FROM pq_tasks"
            )
        }

    def _task_ids(self) -> list[int]:
        return sorted(self.last)

    # -- the operations -----------------------------------------------------------------

    @rule(max_attempts=st.integers(1, 3))
    def enqueue(self, max_attempts: int) -> None:
        self.last_rule = "enqueue"
        pq.enqueue(tasks.add, 1, 2, max_attempts=max_attempts)

    @rule(client_id=st.sampled_from(CLIENT_IDS), value=st.integers(0, 9))
    def upsert(self, client_id: str, value: int) -> None:
        self.last_rule = "upsert"
        pq.upsert(tasks.add, value, 1, client_id=client_id)

    @rule(worker=st.integers(0, 1), limit=st.integers(1, 3))
    def claim(self, worker: int, limit: int) -> None:
        self.last_rule = "claim"
        self.db.query(
            sql.claim_statement(self.config),
            sql.claim_params(self.config, self.workers[worker], limit),
        )

    @rule(data=st.data(), outcome=st.sampled_from(OUTCOMES), stale=st.booleans())
    def finish(self, data: st.DataObject, outcome: tuple[str, str], stale: bool) -> None:
        """Finish a running task, or (``stale``) replay a finish with a token no longer current."""
        self.last_rule = "finish"
        running = self.db.query("SELECT id, run_token::text FROM pq_tasks WHERE status = 'running'")
        if not running:
            return
        task_id, token = data.draw(st.sampled_from(running))
        if stale:
            token = str(uuid.uuid4())
        status, code = outcome
        result = json.dumps(3) if status == "completed" else None
        written = self.db.query(
            sql.FINISH_STATEMENT,
            sql.finish_params(
                [sql.Outcome(task_id, token, status, code, "error" if code else "", result)],
                "django_pq",
            ),
        )
        if stale:
            assert written == [], "a finish with a stale run token was accepted"

    @rule(worker=st.integers(0, 1))
    def reap(self, worker: int) -> None:
        """The worker's lease lapses; the other one reaps its tasks with the heartbeat SQL."""
        self.last_rule = "reap"
        lost_worker, reaper = self.workers[worker], self.workers[1 - worker]
        self.db.query(
            "UPDATE pq_workers SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
            [lost_worker],
        )
        [row] = self.db.query(
            sql.heartbeat_statement(self.config),
            {"id": reaper, "lease": 30, **sql.claim_params(self.config, reaper, 0)},
        )
        lost = row[2]
        owners = {
            task_id: owner
            for task_id, owner in self.db.query(
                "SELECT id, worker_id::text FROM pq_tasks WHERE status = 'running'"
            )
        }
        assert {int(task_id) for task_id, _ in lost} == {
            task_id for task_id, owner in owners.items() if owner == lost_worker
        }, "the reaper must take exactly the lapsed worker's running tasks"
        outcomes = [
            sql.Outcome(int(task_id), token, "failed", "worker_lost", "lost")
            for task_id, token in lost
        ]
        if outcomes:
            self.db.query(sql.FINISH_STATEMENT, sql.finish_params(outcomes, "django_pq"))
        self._register(lost_worker)  # it comes back with a fresh lease

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        self.last_rule = "cancel"
        if self.last:
            pq.cancel(data.draw(st.sampled_from(self._task_ids())))

    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        self.last_rule = "retry"
        if self.last:
            pq.retry(data.draw(st.sampled_from(self._task_ids())))

    @rule()
    def pause_and_fire(self) -> None:
        """Pause the schedule; a paused schedule fires nothing, whatever its next_run."""
        self.last_rule = "pause"
        self.schedule.pause()
        self.db.query("UPDATE pq_periodic SET next_run = now() - interval '1 minute'")
        from django_pq.worker.firing import fire_due

        with self.db.connect() as conn:
            fire_due(conn, "django_pq", 1)
        assert self.db.query("SELECT count(*) FROM pq_tasks WHERE periodic_id IS NOT NULL") == [
            (self._fired,)
        ]

    @rule()
    def resume_and_fire(self) -> None:
        self.last_rule = "resume"
        self.schedule.resume()
        self.db.query("UPDATE pq_periodic SET next_run = now() - interval '1 minute'")
        from django_pq.worker.firing import fire_due

        with self.db.connect() as conn:
            fire_due(conn, "django_pq", 1)

    @property
    def _fired(self) -> int:
        return sum(1 for _ in self.db.query("SELECT 1 FROM pq_tasks WHERE periodic_id IS NOT NULL"))

    # -- what must hold after every step ------------------------------------------------

    @invariant()
    def moves_only_along_the_state_machine(self) -> None:
        now = self._snapshot()
        allowed = ALLOWED_BY_UPSERT if self.last_rule == "upsert" else ALLOWED
        for task_id, (status, _token) in now.items():
            before = self.last.get(task_id)
            if before is None:
                assert status == "pending", f"task {task_id} was born {status}"
            elif before[0] != status:
                assert (before[0], status) in allowed, (
                    f"task {task_id}: {before[0]} -> {status} after {self.last_rule}"
                )
        assert set(self.last) <= set(now), "a task row disappeared"
        self.last = now

    @invariant()
    def rows_obey_their_status(self) -> None:
        bad = self.db.query(
            """SELECT id, status, error_code FROM pq_tasks WHERE
                 (status = 'running' AND (run_token IS NULL OR worker_id IS NULL))
              OR (status = 'failed' AND (error_code = '' OR error = ''))
              OR (status = 'cancelled' AND error_code <> 'cancelled')
              OR (status = 'completed' AND error_code <> '')
              OR (status IN ('completed', 'failed', 'cancelled') AND finished_at IS NULL)
              OR (status = 'pending' AND requeue IS NOT NULL)"""
        )
        assert bad == []
        doubles = self.db.query(
            """SELECT periodic_id, slot FROM pq_tasks WHERE periodic_id IS NOT NULL
               GROUP BY 1, 2 HAVING count(*) > 1"""
        )
        assert doubles == []


@pytest.mark.slow
def test_task_lifecycle_follows_the_state_machine(test_db):
    FIGURES["state machine: runs"] += 1
    run_state_machine_as_test(
        lambda: TaskLifecycle(test_db),
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
