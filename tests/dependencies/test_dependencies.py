"""Tasks that wait for tasks, with real workers and real commits: after=, chains and
their results, batches and their callbacks, the failure rules, cancel and retry of a
structure, atomicity with the caller's transaction, and bad input."""

from __future__ import annotations

import psycopg
import pytest
from django.conf import settings
from django.db import IntegrityError, connection, transaction

import django_pq as pq
from django_pq.models import Batch, Dependency, Task
from tests.testapp import tasks
from tests.testapp.models import FaultLedger
from tests.worker.conftest import run_burst, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def status(task: Task) -> tuple[str, str]:
    task.refresh_from_db()
    return task.status, task.error_code


def ledger(key: str) -> dict[int, dict[str, float]]:
    found: dict[int, dict[str, float]] = {}
    for row in FaultLedger.objects.filter(key=key):
        found.setdefault(row.task_id, {})[row.event] = row.at.timestamp()
    return found


def test_after_waits_blocked_until_its_dependencies_completed(start_worker):
    first = pq.enqueue(tasks.ledger, 0.3, "after")
    second = pq.enqueue(tasks.ledger, 0.2, "after")
    last = pq.enqueue(tasks.ledger, 0, "after", after=[first, second.pk])
    assert status(last) == ("blocked", "")
    run_burst(start_worker, "--concurrency", "3")
    runs = ledger("after")
    assert {status(t)[0] for t in (first, second, last)} == {"completed"}
    # It started after both ended, though a free slot waited for it all along.
    assert runs[last.pk]["start"] >= max(runs[first.pk]["end"], runs[second.pk]["end"])
    assert list(Dependency.objects.filter(task=last).values_list("satisfied", flat=True)) == [
        True,
        True,
    ]


def test_a_chain_runs_in_order_and_passes_each_result_on(start_worker):
    steps = pq.chain(
        pq.prepare(tasks.add, 1, 2),
        pq.prepare(tasks.add, 10),
        pq.prepare(tasks.add, 100),
        pass_result=True,
    )
    assert [t.status for t in steps] == ["pending", "blocked", "blocked"]
    run_burst(start_worker, "--concurrency", "2")
    assert [Task.objects.get(pk=t.pk).decoded_result() for t in steps] == [3, 13, 113]
    assert Batch.objects.get(pk=steps[0].batch_id).kind == "chain"


def test_a_failed_step_cancels_the_rest_of_its_chain_and_run_anyway_still_runs(start_worker):
    failing, after_it, after_that = pq.chain(
        pq.prepare(tasks.raise_error), pq.prepare(tasks.noop), pq.prepare(tasks.noop)
    )
    anyway = pq.enqueue(tasks.noop, after=[after_it], run_anyway=True)
    run_burst(start_worker)
    assert status(failing) == ("failed", "exception")
    assert status(after_it) == ("cancelled", "dependency_failed")
    assert status(after_that) == ("cancelled", "dependency_failed")
    assert status(anyway) == ("completed", "")


@pytest.mark.parametrize("fails", [False, True])
def test_batch_callbacks_run_once_by_their_conditions(start_worker, fails):
    members = [pq.prepare(tasks.ledger, 0.05, "member") for _ in range(6)]
    if fails:
        members.append(pq.prepare(tasks.raise_error))
    made = pq.batch(
        members,
        on_success=pq.prepare(tasks.report_batch, "success"),
        on_failure=pq.prepare(tasks.report_batch, "failure"),
        on_finish=pq.prepare(tasks.report_batch, "finish"),
    )
    assert len(made.tasks) == len(members)
    assert {t.status for t in (made.on_success, made.on_failure, made.on_finish)} == {"blocked"}
    workers = [start_worker("--concurrency", "2", "--burst") for _ in range(2)]
    run_burst(start_worker, "--concurrency", "2")
    for worker in workers:
        worker.wait(60)
    ran, skipped = ("failure", "success") if fails else ("success", "failure")
    assert len(ledger(ran)) == 1 and len(ledger("finish")) == 1
    assert not ledger(skipped)
    done = Task.objects.get(pk=(made.on_failure if fails else made.on_success).pk)
    counts = {"completed": 6, "failed": 1} if fails else {"completed": 6}
    assert done.decoded_result() == {
        "batch": made.id,
        "counts": counts,
        "results": 6,
        "members": len(members),
    }
    skipped_task = made.on_success if fails else made.on_failure
    assert status(skipped_task) == (
        ("cancelled", "dependency_failed") if fails else ("cancelled", "cancelled")
    )
    # Every callback started after every member ended.
    last_end = max(run["end"] for run in ledger("member").values())
    assert min(run["start"] for run in ledger(ran).values()) >= last_end
    assert made.counts == counts


def test_members_ending_together_on_many_workers_release_the_callback_once(start_worker):
    made = pq.batch(
        [pq.prepare(tasks.ledger, 0, "many") for _ in range(300)],
        on_finish=pq.prepare(tasks.report_batch, "once"),
    )
    workers = [start_worker("--concurrency", "2", "--burst") for _ in range(4)]
    for worker in workers:
        worker.wait(120)
    run_burst(start_worker)
    assert len(ledger("many")) == 300
    assert len(ledger("once")) == 1
    assert status(made.on_finish) == ("completed", "")


def test_a_rollback_leaves_nothing_and_a_commit_the_whole_structure():
    with pytest.raises(RuntimeError), transaction.atomic():
        pq.batch([pq.prepare(tasks.noop)], on_finish=pq.prepare(tasks.noop))
        pq.chain(pq.prepare(tasks.noop), pq.prepare(tasks.noop))
        raise RuntimeError("the order failed")
    assert (Task.objects.count(), Batch.objects.count(), Dependency.objects.count()) == (0, 0, 0)
    with transaction.atomic():
        pq.batch([pq.prepare(tasks.noop)] * 3, on_success=pq.prepare(tasks.noop))
    assert (Task.objects.count(), Batch.objects.count(), Dependency.objects.count()) == (4, 1, 3)


def test_a_dependency_that_ends_before_the_caller_commits_still_releases():
    first = pq.enqueue(tasks.noop)
    with psycopg.connect(_url(), autocommit=True) as other, transaction.atomic():
        waiting = pq.enqueue(tasks.noop, after=[first])
        # Another session ends the dependency while this transaction is open: its end
        # cannot see the dependency row written here, so the commit must act on it.
        other.execute(
            "UPDATE pq_tasks SET status = 'completed', finished_at = now() WHERE id = %s",
            [first.pk],
        )
    assert status(waiting) == ("pending", "")
    failed_first = pq.enqueue(tasks.noop)
    with psycopg.connect(_url(), autocommit=True) as other, transaction.atomic():
        doomed = pq.enqueue(tasks.noop, after=[failed_first])
        other.execute(
            "UPDATE pq_tasks SET status = 'failed', error_code = 'exception', error = 'x', "
            "finished_at = now() WHERE id = %s",
            [failed_first.pk],
        )
    assert status(doomed) == ("cancelled", "dependency_failed")


def test_retry_of_a_failed_step_revives_what_its_failure_cancelled():
    first, second, third = pq.chain(
        pq.prepare(tasks.noop), pq.prepare(tasks.noop), pq.prepare(tasks.noop)
    )
    _fail(first)
    assert status(third) == ("cancelled", "dependency_failed")
    assert pq.retry(first)
    assert status(second) == ("blocked", "") and status(third) == ("blocked", "")
    _fail(first)
    assert status(third) == ("cancelled", "dependency_failed")


def test_cancel_batch_cancels_members_and_lets_the_callbacks_decide():
    made = pq.batch(
        [pq.prepare(tasks.noop) for _ in range(3)],
        on_success=pq.prepare(tasks.noop),
        on_failure=pq.prepare(tasks.noop),
        on_finish=pq.prepare(tasks.noop),
    )
    changed = pq.cancel_batch(made.id)
    assert sorted(changed) == sorted((t.pk, "cancelled") for t in made.tasks)
    assert status(made.on_success) == ("cancelled", "dependency_failed")
    assert status(made.on_failure) == ("pending", "")
    assert status(made.on_finish) == ("pending", "")
    assert sorted(pq.retry_batch(made.id)) == sorted(t.pk for t in made.tasks)
    assert status(made.on_success) == ("blocked", "")


def test_cancelling_a_blocked_task_cancels_it_at_once():
    first = pq.enqueue(tasks.noop)
    waiting = pq.enqueue(tasks.noop, after=[first])
    assert pq.cancel(waiting)
    assert status(waiting) == ("cancelled", "cancelled")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: pq.enqueue(tasks.noop, after=[987654321]), "do not exist"),
        (lambda: pq.enqueue(tasks.noop, after=["7"]), "saved tasks"),
        (lambda: pq.enqueue(tasks.noop, after=[True]), "saved tasks"),
        (lambda: pq.enqueue(tasks.noop, after="1"), "list of tasks"),
        (lambda: pq.enqueue(tasks.noop, run_anyway="yes"), "True or False"),
        (lambda: pq.batch([]), "non-empty"),
        (lambda: pq.batch([tasks.noop]), "prepared call"),
        (lambda: pq.batch([pq.prepare(tasks.noop)], on_success=tasks.noop), "prepared call"),
        (lambda: pq.chain(), "at least one step"),
        (lambda: pq.upsert(tasks.noop, client_id="u", after=[1]), "upsert"),
    ],
)
def test_bad_structures_are_refused_at_the_call_and_write_nothing(call, message):
    with pytest.raises(pq.TaskRefused, match=message):
        call()
    assert (Task.objects.count(), Batch.objects.count(), Dependency.objects.count()) == (0, 0, 0)


def test_waiting_for_a_task_that_already_failed_is_refused_unless_run_anyway():
    failed = pq.enqueue(tasks.noop)
    _fail(failed)
    with pytest.raises(pq.TaskRefused, match="already failed"):
        pq.enqueue(tasks.noop, after=[failed])
    assert Task.objects.count() == 1
    anyway = pq.enqueue(tasks.noop, after=[failed], run_anyway=True)
    assert status(anyway) == ("pending", "")


def test_a_cycle_written_by_hand_is_refused_by_the_database():
    first = pq.enqueue(tasks.noop)
    second = pq.enqueue(tasks.noop, after=[first])
    third = pq.enqueue(tasks.noop, after=[second])
    with pytest.raises(IntegrityError, match="cycle"), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO pq_dependencies (task_id, depends_on_id, satisfied, is_fresh) "
            "VALUES (%s, %s, false, true)",
            [first.pk, third.pk],
        )


def _fail(task: Task) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE pq_tasks SET status = 'failed', error_code = 'exception', "
            "error = 'failed on purpose', finished_at = now() WHERE id = %s",
            [task.pk],
        )


def _url() -> str:
    db = settings.DATABASES["default"]
    return (
        f"postgresql://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{connection.settings_dict['NAME']}"
    )


@pytest.mark.django_db(transaction=False)
def test_the_testing_helper_runs_what_waits_inside_a_test_transaction():
    from django_pq.testing import run_pending_tasks

    first = pq.enqueue(tasks.add, 1, 2)
    waiting = pq.enqueue(tasks.add, 3, 4, after=[first])
    steps = pq.chain(pq.prepare(tasks.add, 1, 1), pq.prepare(tasks.add, 5), pass_result=True)
    outcomes = run_pending_tasks()
    assert [o.status for o in outcomes] == ["completed"] * 4
    assert status(waiting) == ("completed", "")
    assert Task.objects.get(pk=steps[1].pk).decoded_result() == 7


def test_a_released_task_is_announced_on_the_configured_channel(settings):
    settings.PQ_NOTIFY_CHANNEL = "Orders_Channel"
    connection.close()  # the next connection names the channel (connection_created)
    first = pq.enqueue(tasks.noop)
    waiting = pq.enqueue(tasks.noop, after=[first], queue="mail")
    with psycopg.connect(_url(), autocommit=True) as listener:
        listener.execute('LISTEN "Orders_Channel"')
        with connection.cursor() as cursor:  # ends it the way the worker's finish does
            cursor.execute(
                "UPDATE pq_tasks SET status = 'completed', finished_at = now() WHERE id = %s",
                [first.pk],
            )
        heard = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert status(waiting) == ("pending", "")
    assert heard and heard[0].startswith("t:") and heard[0].endswith(":mail")


def test_a_retried_member_releases_its_dependents_only_when_it_completes(start_worker):
    # Fails its first run (retried after the backoff), completes its second.
    flaky = pq.enqueue(tasks.fail_until, 2, "flaky-dep", max_attempts=2)
    after = pq.enqueue(tasks.ledger, 0, "after-flaky", after=[flaky])
    worker = start_worker("--concurrency", "2")
    wait_until(lambda: status(after)[0] == "completed", 60, worker.output)
    flaky.refresh_from_db()
    assert (flaky.status, flaky.attempts) == ("completed", 2)
    [run] = ledger("after-flaky").values()
    assert run["start"] >= flaky.finished_at.timestamp()
    assert status(after) == ("completed", "")


def test_two_callers_waiting_for_the_same_tasks_commit_without_a_deadlock():
    import threading

    from django.db import connections

    a, b = pq.enqueue(tasks.noop), pq.enqueue(tasks.noop)
    errors: list[BaseException] = []
    ready = threading.Barrier(3)

    def caller(after: list[Task]) -> None:
        try:
            with transaction.atomic():
                pq.enqueue(tasks.noop, after=after)
                ready.wait(10)
            # The commit's check waits here for the session holding both rows.
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            connections.close_all()

    with psycopg.connect(_url()) as holder:
        # Hold both rows, as an end under way would, while both callers reach their commit.
        holder.execute(
            "SELECT 1 FROM pq_tasks WHERE id = ANY(%s) FOR NO KEY UPDATE", [[a.pk, b.pk]]
        )
        threads = [threading.Thread(target=caller, args=(order,)) for order in ([a, b], [b, a])]
        for thread in threads:
            thread.start()
        ready.wait(10)
        _wait_for_waiters(holder, 2)
        holder.commit()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert Task.objects.filter(status="blocked").count() == 2


def _wait_for_waiters(session: psycopg.Connection, count: int) -> None:
    from tests.worker.conftest import wait_until

    wait_until(
        lambda: (
            session.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            ).fetchone()[0]
            >= count
        ),
        10,
        "both callers to wait for the held rows",
    )


def test_a_cycle_rewired_by_hand_is_refused_and_ends_never_walk_the_graph():
    first = pq.enqueue(tasks.noop)
    second = pq.enqueue(tasks.noop, after=[first])
    third = pq.enqueue(tasks.noop, after=[second])
    with (
        pytest.raises(IntegrityError, match="cycle"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "UPDATE pq_dependencies SET depends_on_id = %s WHERE task_id = %s",
            [third.pk, second.pk],
        )
    # A cycle written with the checks off (a restore, a hand edit) through a task that
    # still runs: that task's end must still be recorded.
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE pq_dependencies DISABLE TRIGGER pq_dependencies_acyclic_insert")
        cursor.execute(
            "INSERT INTO pq_dependencies (task_id, depends_on_id, is_fresh) VALUES (%s, %s, true)",
            [first.pk, third.pk],
        )
        cursor.execute("ALTER TABLE pq_dependencies ENABLE TRIGGER pq_dependencies_acyclic_insert")
        cursor.execute(
            "UPDATE pq_tasks SET status = 'completed', finished_at = now() WHERE id = %s",
            [first.pk],
        )
    assert status(first) == ("completed", "")
    assert status(second) == ("pending", "")  # what it waited for ended
