"""Flow limits with real workers: concurrency across workers, rate, ordered sequences and
their failures, pausing a key, fair sharing, a dead worker's slot; each run's start and end
come from the tasks' own ledger (tests.testapp.tasks.ledger)."""

from __future__ import annotations

import itertools
import signal
from collections import defaultdict

import pytest
from django.db import connection

import django_pq as pq
from django_pq.models import FlowKey, Limit, Task
from tests.testapp import tasks
from tests.testapp.models import FaultLedger
from tests.worker.conftest import run_burst, wait_until


def runs(key: str = "") -> list[tuple[int, float, float | None]]:
    """(task id, start, end) of each run of tasks with ledger ``key``, by start."""
    found: dict[int, list[float | None]] = defaultdict(lambda: [None, None])
    rows = FaultLedger.objects.all() if not key else FaultLedger.objects.filter(key=key)
    for row in rows.order_by("at"):
        found[row.task_id][0 if row.event == "start" else 1] = row.at.timestamp()
    return sorted(
        ((tid, s, e) for tid, (s, e) in found.items() if s is not None), key=lambda r: r[1]
    )


def most_at_once(intervals: list[tuple[int, float, float | None]]) -> int:
    """The most runs that overlapped at any moment (a run with no end still runs)."""
    events = []
    for _, start, end in intervals:
        events += [(start, 1), (end if end is not None else float("inf"), -1)]
    running = peak = 0
    for _, change in sorted(events, key=lambda e: (e[0], e[1])):
        running += change
        peak = max(peak, running)
    return peak


def finished(count: int) -> bool:
    return Task.objects.filter(status__in=["completed", "failed", "cancelled"]).count() >= count


def test_concurrency_holds_across_workers_for_each_key_of_a_pattern(start_worker):
    keys = ["api:a", "api:b", "api:c"]
    for number in range(24):
        key = keys[number % 3]
        pq.enqueue(tasks.ledger, 0.15, key, limit_key=key)
    limits = {"PQ_LIMITS": {"api:*": {"concurrency": 2}}}
    workers = [start_worker("--concurrency", "3", settings=limits) for _ in range(3)]
    wait_until(lambda: finished(24), 60, lambda: workers[0].output())
    for key in keys:
        by_key = runs(key)
        assert len(by_key) == 8
        # Nine slots could run all eight at once; the limit allows two, and two ran.
        assert most_at_once(by_key) == 2, by_key
    # The most specific limit wins: the pattern's, written from the setting at start.
    assert Limit.objects.get(pattern="api:*").concurrency == 2
    assert Task.objects.filter(status="completed").count() == 24


def test_a_key_no_limit_names_runs_unlimited(start_worker):
    for _ in range(4):
        pq.enqueue(tasks.ledger, 0.5, "free", limit_key="free:1")
    limits = {"PQ_LIMITS": {"other": {"concurrency": 1}}}
    run_burst(start_worker, "--concurrency", "4", settings=limits)
    assert most_at_once(runs("free")) == 4


def test_the_exact_key_wins_over_a_pattern(start_worker):
    for key in ["vip:1"] * 3 + ["vip:2"] * 3:
        pq.enqueue(tasks.ledger, 0.4, key, limit_key=key)
    limits = {"PQ_LIMITS": {"vip:*": {"concurrency": 1}, "vip:1": {"concurrency": 3}}}
    run_burst(start_worker, "--concurrency", "6", settings=limits)
    assert most_at_once(runs("vip:1")) == 3
    assert most_at_once(runs("vip:2")) == 1


def test_rate_spreads_starts_and_a_burst_worker_waits_for_its_tokens(start_worker):
    for _ in range(12):
        pq.enqueue(tasks.ledger, 0, "rated", limit_key="rated")
    limits = {"PQ_LIMITS": {"rated": {"rate": "10/s"}}}
    run_burst(start_worker, "--concurrency", "4", settings=limits, timeout=60)
    assert len(runs("rated")) == 12  # --burst did not stop while tokens were still to come
    # The claim spends the tokens by the statement's clock; started_at is its
    # transaction's start, a few milliseconds earlier when a finish came first. One token
    # to begin with (burst 1), then one per 0.1 s.
    starts = sorted(t.started_at.timestamp() for t in Task.objects.filter(limit_key="rated"))
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert min(gaps) > 0.08, gaps
    assert starts[-1] - starts[0] > 1.05, gaps
    # In no one-second window more starts than the rate and its burst allow.
    for first in starts:
        assert sum(first <= s < first + 1 for s in starts) <= 11


def test_a_burst_lets_saved_tokens_start_together(start_worker):
    for _ in range(3):
        pq.enqueue(tasks.ledger, 0.3, "bursty", limit_key="bursty")
    limits = {"PQ_LIMITS": {"bursty": {"rate": "1/m", "burst": 3}}}
    run_burst(start_worker, "--concurrency", "3", settings=limits)
    assert most_at_once(runs("bursty")) == 3


def test_ordered_runs_one_at_a_time_in_enqueue_order(start_worker):
    made = [
        pq.enqueue(tasks.ledger, seconds, "seq", limit_key="seq:1")
        for seconds in (0.3, 0.0, 0.2, 0.0, 0.1)
    ]
    # A higher priority does not jump the sequence.
    made.append(pq.enqueue(tasks.ledger, 0, "seq", limit_key="seq:1", priority=pq.Priority.HIGH))
    limits = {"PQ_LIMITS": {"seq:*": {"ordered": True}}}
    for _ in range(2):
        start_worker("--concurrency", "2", settings=limits)
    wait_until(lambda: finished(6), 30)
    order = runs("seq")
    assert [task_id for task_id, _, _ in order] == [task.pk for task in made]
    assert most_at_once(order) == 1


def test_a_failure_holds_an_ordered_key_until_released(start_worker):
    first = pq.enqueue(tasks.ledger, 0, "held", limit_key="seq:h")
    failing = pq.enqueue(tasks.raise_error, limit_key="seq:h")
    rest = [pq.enqueue(tasks.ledger, 0, "held", limit_key="seq:h") for _ in range(2)]
    limits = {"PQ_LIMITS": {"seq:*": {"ordered": True}}}
    worker = start_worker("--concurrency", "2", settings=limits)
    wait_until(lambda: Task.objects.get(pk=failing.pk).status == "failed", 30, worker.output)
    # The worker goes on with other work while the sequence waits.
    other = pq.enqueue(tasks.ledger, 0, "other")
    wait_until(lambda: Task.objects.get(pk=other.pk).status == "completed", 30, worker.output)
    wait_until(lambda: FlowKey.objects.get(key="seq:h").is_held, 10)
    assert [t for t, _, _ in runs("held")] == [first.pk]
    assert {t.status for t in Task.objects.filter(pk__in=[t.pk for t in rest])} == {"pending"}
    pq.resume_key("seq:h")  # release: the sequence goes on after the failure
    wait_until(lambda: finished(5), 30, worker.output)
    assert [t for t, _, _ in runs("held")] == [first.pk, *(t.pk for t in rest)]
    assert not FlowKey.objects.get(key="seq:h").is_held


def test_release_on_failure_lets_the_sequence_go_on(start_worker):
    pq.enqueue(tasks.raise_error, limit_key="seq:r")
    after = pq.enqueue(tasks.ledger, 0, "released", limit_key="seq:r")
    limits = {"PQ_LIMITS": {"seq:r": {"ordered": True, "on_failure": "release"}}}
    run_burst(start_worker, settings=limits)
    assert Task.objects.get(pk=after.pk).status == "completed"


def test_a_paused_key_waits_and_resume_wakes_the_workers(start_worker):
    pq.pause_key("mail")
    paused = [pq.enqueue(tasks.ledger, 0, "paused", limit_key="mail") for _ in range(2)]
    other = pq.enqueue(tasks.ledger, 0, "other", limit_key="sms")
    worker = start_worker("--concurrency", "2")
    wait_until(lambda: Task.objects.get(pk=other.pk).status == "completed", 30, worker.output)
    assert {t.status for t in Task.objects.filter(pk__in=[t.pk for t in paused])} == {"pending"}
    pq.resume_key("mail")
    wait_until(lambda: finished(3), 30, worker.output)


def test_a_dead_worker_s_slot_is_freed_when_its_lease_is_reaped(start_worker, tmp_path):
    gate = tmp_path / "never"
    stuck = pq.enqueue(
        tasks.wait_for_file, str(gate), "stuck", 120, limit_key="one", max_attempts=1
    )
    nxt = pq.enqueue(tasks.ledger, 0, "next", limit_key="one")
    limits = {"PQ_LIMITS": {"one": {"concurrency": 1}}}
    doomed = start_worker("--concurrency", "2", settings=limits)
    wait_until(lambda: Task.objects.get(pk=stuck.pk).status == "running", 30, doomed.output)
    survivor = start_worker("--concurrency", "2", settings=limits)
    doomed.signal(signal.SIGKILL)
    # The survivor reaps the dead worker's task (worker_lost) and then runs the next one.
    wait_until(lambda: Task.objects.get(pk=nxt.pk).status == "completed", 60, survivor.output)
    assert Task.objects.get(pk=stuck.pk).error_code == "worker_lost"


def test_a_limit_changed_in_the_database_applies_without_a_restart(start_worker):
    limits = {"PQ_LIMITS": {"live": {"concurrency": 1}}}
    worker = start_worker("--concurrency", "3", settings=limits)
    wait_until(lambda: Limit.objects.filter(pattern="live").exists(), 30, worker.output)
    Limit.objects.filter(pattern="live").update(concurrency=3)
    for _ in range(3):
        pq.enqueue(tasks.ledger, 0.5, "live", limit_key="live")
    wait_until(lambda: finished(3), 30, worker.output)
    assert most_at_once(runs("live")) == 3


def test_fair_key_shares_the_claim_round_robin_across_tenants(start_worker):
    pq.enqueue_many(pq.prepare(tasks.ledger, 0, "A", fair_key="tenant:A") for _ in range(60))
    late = [pq.enqueue(tasks.ledger, 0, "B", fair_key="tenant:B") for _ in range(3)]
    run_burst(start_worker, "--concurrency", "1", timeout=60)
    order = [task_id for task_id, _, _ in runs()]
    # Without fair sharing B would start 61st to 63rd; round-robin takes it in turn.
    assert max(order.index(task.pk) for task in late) <= 6, order[:10]


@pytest.mark.django_db
def test_fair_turns_keep_a_tenant_s_own_order_and_interleave_newcomers():
    a = pq.enqueue_many(pq.prepare(tasks.noop, fair_key="A") for _ in range(4))
    b = pq.enqueue_many(pq.prepare(tasks.noop, fair_key="B") for _ in range(2))
    plain = pq.enqueue(tasks.noop)
    ranks = {t.pk: t.fair_rank for t in Task.objects.all()}
    assert [ranks[t.pk] for t in a] == [1, 2, 3, 4]
    assert [ranks[t.pk] for t in b] == [1, 2]
    assert ranks[plain.pk] == 0
    # A newcomer after A's first two ran joins the current turn, not the back of A's line.
    Task.objects.filter(pk__in=[a[0].pk, a[1].pk, b[0].pk]).update(status="completed")
    c = pq.enqueue(tasks.noop, fair_key="C")
    # Pending now: B at turn 2, A at 3 and 4; C joins turn 2, ahead of A's third.
    assert Task.objects.get(pk=c.pk).fair_rank == 2


@pytest.mark.django_db
@pytest.mark.parametrize("option", ["limit_key", "fair_key"])
@pytest.mark.parametrize("bad", [5, "", "x" * 201, "a\x00b"])
def test_a_bad_key_is_refused_at_enqueue(option, bad):
    with pytest.raises(pq.TaskRefused, match=option):
        pq.enqueue(tasks.noop, **{option: bad})
    assert not Task.objects.exists()


@pytest.mark.django_db
def test_a_declared_key_function_derives_the_key_from_the_call():
    from tests.testapp.policy_tasks import sync_customer

    task = sync_customer.enqueue(42)
    assert task.limit_key == "customer:42"
    assert sync_customer.enqueue(None).limit_key is None
    with pytest.raises(pq.TaskRefused, match="limit_key"):
        sync_customer.enqueue("")
    with pytest.raises(pq.TaskRefused, match="raised"):
        sync_customer.enqueue()


def test_a_task_row_whose_key_row_was_deleted_still_runs(start_worker):
    limits = {"PQ_LIMITS": {"gone": {"concurrency": 1}}}
    pq.enqueue(tasks.ledger, 0, "gone", limit_key="gone")
    run_burst(start_worker, settings=limits)
    FlowKey.objects.filter(key="gone").delete()
    pq.enqueue(tasks.ledger, 0, "gone", limit_key="gone")
    run_burst(start_worker, settings=limits)
    assert len(runs("gone")) == 2


@pytest.mark.django_db
@pytest.mark.slow
def test_the_claim_stays_index_driven_with_a_million_ready_rows_over_ten_thousand_keys():
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO pq_limits (pattern, concurrency, burst, ordered, on_failure, source, "
            "updated_at) VALUES ('k:*', 2, 1, false, 'hold', 'setting', now())"
        )
        cursor.execute(
            "INSERT INTO pq_tasks (queue, name, payload, priority, status, run_at, "
            "created_at, attempts, max_attempts, error, error_code, is_cancel_requested, "
            "limit_key) SELECT 'default', 'tests.testapp.tasks:noop', '{}', 50, 'pending', "
            "now() - interval '1 minute', now(), 0, 1, '', '', false, 'k:' || (g %% 10000) "
            "FROM generate_series(1, %s) AS g",
            [1_000_000],
        )
        cursor.execute("ANALYZE pq_tasks")
        from django_pq.store import worker as sql
        from django_pq.store.worker import ClaimFilter

        cursor.execute(
            "EXPLAIN " + sql.claim_statement(ClaimFilter()),
            sql.claim_params(ClaimFilter(), "00000000-0000-0000-0000-000000000000", 4),
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Seq Scan on pq_tasks" not in plan, plan
    assert "pq_tasks_claim_fair" in plan, plan
