"""Flow limits under fire: kill -9ed workers and terminated connections never let more
tasks of a key run at once than its ``concurrency`` allows, and never strand a key.

Two authorities judge "at once" (docs/how-to/flow-control.md):

- the rows: a sampler reads the ``running`` rows per ``limit_key`` every ~10 ms, the very
  count the claim enforces (a dead worker's rows count until they are reaped: they hold
  their slots until then, by design);
- the run ledger, for completed runs only: a run whose start and end were both written
  under the same run token (the ledger reads the token from the row as it is *then*,
  only while it is ``running``). Such a run lies wholly inside its row's running period
  for that token, so the runs of a key overlapping in the ledger is a lower bound of its
  rows running at once. A run whose worker was kill -9ed has no end; a run whose row was
  reaped while its child still ran (the child is killed a moment later) ended after its
  row stopped running, so its end carries no token or another one. Both are left out:
  their successor may legitimately start once the row is no longer running.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import defaultdict
from typing import Any

import psycopg
import pytest

from tests.faults.conftest import (
    FIGURES,
    LEDGER_TABLE,
    LEDGER_TASK,
    SCALE,
    Target,
    check_invariants,
    postgres_log_problems,
    scaled,
    unfinished,
    wait_until_quiet,
)

#: The full sizes (scale 1): 8 workers x concurrency 2 on 5,000 tasks over 50 keys.
WORKERS = 8
TASKS = 5_000
KEYS = 50
CONCURRENCY = 2
LIMITS = {"PQ_LIMITS": {"k*": {"concurrency": CONCURRENCY}}}
SAMPLE_EVERY = 0.01


def long_above_default_scale(test: Any) -> Any:
    """At the default scale these scenarios run in the normal suite (about a minute in
    all); at a larger scale they are load scenarios, in the ``slow`` selection."""
    return pytest.mark.slow(test) if SCALE > 0.03 else test


def drain_timeout(tasks: int) -> float:
    return 120 + tasks / 10  # at worst 10 tasks a second on a loaded 2-core machine


def enqueue_keyed_ledger_tasks(
    target: Target, keys: list[str], seconds: list[float], *, max_attempts: int
) -> list[int]:
    """One ledger task per (key, seconds) pair, ``limit_key`` and ledger key both the key
    (raw SQL: works on any target)."""
    rows = target.query(
        """INSERT INTO pq_tasks (queue, name, payload, priority, run_at, max_attempts,
                                 status, attempts, error, error_code, is_cancel_requested,
                                 limit_key)
           SELECT 'default', %s, jsonb_build_object('args', jsonb_build_array(s),
                                                    'kwargs', jsonb_build_object('key', k)),
                  50, now(), %s, 'pending', 0, '', '', false, k
           FROM unnest(%s::text[], %s::float8[]) WITH ORDINALITY AS given(k, s, n)
           ORDER BY n
           RETURNING id""",
        [LEDGER_TASK, max_attempts, keys, seconds],
    )
    target.query("SELECT pg_notify('django_pq', 't:0:default')")
    FIGURES["tasks enqueued"] += len(keys)
    return sorted(row[0] for row in rows)


class RunningSampler:
    """A thread reading the running rows per key every ``SAMPLE_EVERY`` seconds: the most
    seen at once per key, and every sample above ``limit`` with the rows' ids and workers
    (each sample is one snapshot, so what it shows was committed at once)."""

    def __init__(self, target: Target, limit: int) -> None:
        self.target = target
        self.limit = limit
        self.most: dict[str, int] = defaultdict(int)
        self.over: list[tuple[float, str, int, list[int], list[str]]] = []
        self.samples = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="running-sampler", daemon=True)

    def __enter__(self) -> RunningSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = self.target.connect()
                rows = conn.execute(
                    """SELECT limit_key, count(*), array_agg(id ORDER BY id),
                              array_agg(worker_id::text ORDER BY id)
                       FROM pq_tasks WHERE status = 'running' AND limit_key IS NOT NULL
                       GROUP BY 1"""
                ).fetchall()
            except psycopg.Error as error:  # the sampler outlives a hiccup
                self.errors.append(repr(error))
                with contextlib.suppress(psycopg.Error):
                    if conn is not None:
                        conn.close()
                conn = None
                self._stop.wait(0.1)
                continue
            self.samples += 1
            for key, count, ids, workers in rows:
                self.most[key] = max(self.most[key], count)
                if count > self.limit:
                    self.over.append((time.time(), key, count, ids, workers))
            self._stop.wait(SAMPLE_EVERY)
        if conn is not None:
            conn.close()


def completed_runs(target: Target) -> dict[str, list[tuple[int, float, float]]]:
    """Per ledger key: (task id, start, end) of each run whose start and end were both
    written under the same run token (see the module's docstring)."""
    rows = target.query(
        f"""SELECT s.key, s.task_id, extract(epoch FROM s.at)::float8,
                   extract(epoch FROM e.at)::float8
            FROM {LEDGER_TABLE} s JOIN {LEDGER_TABLE} e
              ON e.task_id = s.task_id AND e.event = 'end' AND e.run_token = s.run_token
                 AND e.pid = s.pid
            WHERE s.event = 'start' AND s.run_token IS NOT NULL"""
    )
    runs: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for key, task_id, start, end in rows:
        runs[key].append((task_id, start, end))
    return runs


def most_at_once(runs: list[tuple[int, float, float]]) -> tuple[int, list[int]]:
    """The most runs overlapping at one moment, and the tasks that did. An end at the very
    moment of another's start is no overlap."""
    events = sorted(
        [(start, 1, task_id) for task_id, start, _ in runs]
        + [(end, -1, task_id) for task_id, _, end in runs]
    )  # ends (-1) sort before starts (+1) at the same moment
    now_running: set[int] = set()
    peak, witnesses = 0, []
    for _, change, task_id in events:
        if change > 0:
            now_running.add(task_id)
        else:
            now_running.discard(task_id)
        if len(now_running) > peak:
            peak, witnesses = len(now_running), sorted(now_running)
    return peak, witnesses


def ledger_overlaps(target: Target, limit: int) -> tuple[dict[str, int], list[str]]:
    """Per key the most completed runs at once, and a description of each key over ``limit``."""
    peaks, over = {}, []
    for key, runs in completed_runs(target).items():
        peak, witnesses = most_at_once(runs)
        peaks[key] = peak
        if peak > limit:
            detail = target.query(
                f"""SELECT task_id, event, run_token::text, attempt, pid, at
                    FROM {LEDGER_TABLE} WHERE task_id = ANY(%s) ORDER BY at""",
                [witnesses],
            )
            over.append(f"key {key}: {peak} completed runs at once: {detail}")
    return peaks, over


def interrupted_runs(target: Target) -> int:
    """Ledger starts with no end under their token: runs killed (or reaped) midway."""
    [(count,)] = target.query(
        f"""SELECT count(*) FROM {LEDGER_TABLE} s WHERE s.event = 'start' AND NOT EXISTS (
                SELECT 1 FROM {LEDGER_TABLE} e WHERE e.task_id = s.task_id
                  AND e.event = 'end' AND e.run_token IS NOT DISTINCT FROM s.run_token)"""
    )
    return int(count)


def terminate_worker_connections(target: Target, limit: int | None = None) -> int:
    """pg_terminate_backend of ``limit`` random worker connections (all when None)."""
    terminated = target.query(
        f"""SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE application_name LIKE 'pq_worker:%%' ORDER BY random()
            {"" if limit is None else f"LIMIT {int(limit)}"}"""
    )
    return len(terminated)


def flow_rows_are_clear(target: Target) -> list[Any]:
    """Keys left paused, held or blocked, or a governed key with tasks still waiting."""
    return target.query(
        """SELECT f.key, f.is_paused, f.is_held, f.blocked_until,
                  (SELECT count(*) FROM pq_tasks t WHERE t.limit_key = f.key
                     AND t.status IN ('pending', 'running'))
           FROM pq_flow_keys f
           WHERE f.is_paused OR f.is_held OR f.blocked_until > now() OR EXISTS (
               SELECT 1 FROM pq_tasks t WHERE t.limit_key = f.key
                 AND t.status IN ('pending', 'running'))"""
    )


@long_above_default_scale
def test_chaos_never_runs_more_of_a_key_at_once_than_its_limit(private_db, fleet):
    private_db.query("TRUNCATE pq_flow_keys, pq_limits")
    rng = random.Random(50)
    workers_wanted = scaled(WORKERS, minimum=4)
    # Fewer key slots than worker slots, so the limits bind all along; the keys' shares
    # are skewed (1/n) so that at any scale the hottest keys always have a backlog.
    keys = [f"k{n}" for n in range(scaled(KEYS, minimum=3))]
    count = scaled(TASKS, minimum=400)
    chosen = rng.choices(keys, weights=[1 / (n + 1) for n in range(len(keys))], k=count)
    seconds = [round(rng.uniform(0.02, 0.1), 3) for _ in range(count)]
    ids = enqueue_keyed_ledger_tasks(private_db, chosen, seconds, max_attempts=3)

    def start() -> Any:
        return fleet.start(private_db, "--concurrency", "2", settings=LIMITS)

    workers = [start() for _ in range(workers_wanted)]
    kills = terminations = 0
    started = time.monotonic()
    deadline = started + drain_timeout(count)
    with RunningSampler(private_db, CONCURRENCY) as sampler:
        # Chaos until at most a fifth is left (and at least three kills): a kill -9 or a
        # terminated worker connection every 0.3-1 s, a replacement for each dead worker.
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.3, 1.0))
            if rng.random() < 0.5:
                victim = rng.choice([worker for worker in workers if worker.is_alive()])
                victim.kill()
                kills += 1
                workers.append(start())
            terminations += terminate_worker_connections(private_db, rng.choice([1, 2]))
            if kills >= 3 and sum(unfinished(private_db)) <= count // 5:
                break
        wait_until_quiet(private_db, drain_timeout(count), fleet)
    FIGURES["flow chaos: seconds to run"] += round(time.monotonic() - started)
    FIGURES["flow chaos: workers kill -9ed"] += kills
    FIGURES["flow chaos: connections terminated"] += terminations
    FIGURES["flow chaos: running samples"] += sampler.samples

    # (a) The rows: never more running of a key than its limit, in any sample.
    assert sampler.over == [], f"over the limit of {CONCURRENCY}: {sampler.over[:10]}"
    assert sampler.samples > 100, (sampler.samples, sampler.errors[:5])
    assert max(sampler.most.values()) == CONCURRENCY, dict(sampler.most)  # limits did bind
    # (b) The ledger: never more completed runs of a key overlapping than its limit.
    peaks, over = ledger_overlaps(private_db, CONCURRENCY)
    assert over == [], "\n".join(over[:5])
    assert max(peaks.values()) == CONCURRENCY, peaks
    # (c) Nothing lost, nothing run more often than max_attempts, every token its own.
    verdict = check_invariants(private_db, expected_ids=ids)
    FIGURES["flow chaos: tasks lost to worker_lost"] += verdict.error_codes["worker_lost"]
    FIGURES["flow chaos: runs interrupted"] += interrupted_runs(private_db)
    assert verdict.tasks == len(ids)
    assert set(verdict.error_codes) <= {"worker_lost", "signal", "exception"}, verdict
    # (d) No slot leaked: every task finished, no key left believing it is full.
    assert set(verdict.statuses) <= {"completed", "failed"}, verdict.statuses
    assert verdict.statuses["completed"] >= len(ids) * 0.9, verdict.statuses
    assert flow_rows_are_clear(private_db) == []
    assert kills >= 3 and terminations >= 3
    assert interrupted_runs(private_db) >= 1  # the kills hit runs mid-way
    assert postgres_log_problems(private_db) == []
    fleet.stop_all()
    fleet.assert_nothing_left_behind()


@long_above_default_scale
def test_terminated_connections_never_overlap_a_concurrency_1_key(test_db, fleet):
    rng = random.Random(1)
    limits = {"PQ_LIMITS": {"solo": {"concurrency": 1}}}
    count = scaled(1_000, minimum=30)
    ids = enqueue_keyed_ledger_tasks(test_db, ["solo"] * count, [0.15] * count, max_attempts=3)
    # Four slots in all: only the limit keeps the key's tasks one at a time.
    for _ in range(2):
        fleet.start(test_db, "--concurrency", "2", settings=limits)
    terminations = while_running = 0
    started = time.monotonic()
    deadline = started + drain_timeout(count)
    with RunningSampler(test_db, 1) as sampler:
        while unfinished(test_db) != (0, 0) and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.1, 0.5))
            [(running,)] = test_db.query(
                "SELECT count(*) FROM pq_tasks WHERE status = 'running' AND limit_key = 'solo'"
            )
            done = terminate_worker_connections(test_db)
            terminations += done
            while_running += bool(done and running)
        wait_until_quiet(test_db, drain_timeout(count), fleet)
    FIGURES["flow reconnect: connections terminated"] += terminations
    FIGURES["flow reconnect: seconds to run"] += round(time.monotonic() - started)

    assert sampler.over == [], f"over the limit of 1: {sampler.over[:10]}"
    assert sampler.most["solo"] == 1, dict(sampler.most)
    peaks, over = ledger_overlaps(test_db, 1)
    assert over == [], "\n".join(over[:5])
    assert peaks == {"solo": 1}
    verdict = check_invariants(test_db, expected_ids=ids)
    assert verdict.statuses == {"completed": count}, (verdict.statuses, verdict.error_codes)
    assert len(completed_runs(test_db)["solo"]) >= count
    assert while_running >= 5, while_running  # the cuts came while the key's tasks ran
    assert flow_rows_are_clear(test_db) == []
    for worker in fleet.workers:
        assert worker.is_alive(), worker.tail()


@long_above_default_scale
def test_claims_racing_for_each_freed_slot_never_exceed_the_limit(test_db, fleet):
    """No chaos, only contention: near-instant tasks of three hot keys, so every end frees
    a slot that the workers, woken together, race to claim. Two claims deciding one key
    at once are what the version fence settles (with the fence removed, this scenario
    caught a third running task of a key in each of three runs)."""
    rng = random.Random(2)
    count = scaled(TASKS, minimum=800)
    keys = rng.choices(["k0", "k1", "k2"], weights=[1, 1 / 2, 1 / 3], k=count)
    seconds = [round(rng.uniform(0.0, 0.01), 3) for _ in range(count)]
    ids = enqueue_keyed_ledger_tasks(test_db, keys, seconds, max_attempts=1)
    for _ in range(scaled(WORKERS, minimum=4)):
        fleet.start(test_db, "--concurrency", "2", settings=LIMITS)
    started = time.monotonic()
    with RunningSampler(test_db, CONCURRENCY) as sampler:
        wait_until_quiet(test_db, drain_timeout(count), fleet)
    FIGURES["flow storm: seconds to run"] += round(time.monotonic() - started)
    FIGURES["flow storm: running samples"] += sampler.samples

    assert sampler.over == [], f"over the limit of {CONCURRENCY}: {sampler.over[:10]}"
    assert sampler.most["k0"] == CONCURRENCY, dict(sampler.most)  # the limit did bind
    _, over = ledger_overlaps(test_db, CONCURRENCY)
    assert over == [], "\n".join(over[:5])
    verdict = check_invariants(test_db, expected_ids=ids)
    assert verdict.statuses == {"completed": count}, verdict.statuses
    assert verdict.runs == count and verdict.tasks_run_more_than_once == 0
    assert flow_rows_are_clear(test_db) == []
