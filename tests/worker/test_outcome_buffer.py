"""The unwritten outcomes: kept in order until the database takes them, written one by one
when it refuses a batch, and an unstorable one still lands, as a failure that says why."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest

import django_pq as pq
from django_pq.conf import pq_settings
from django_pq.models import Task
from django_pq.store import worker as sql
from django_pq.store.worker import Claimed, Outcome
from django_pq.worker import faults
from django_pq.worker.config import WorkerConfig
from django_pq.worker.database import Database
from django_pq.worker.outcome_buffer import OutcomeBuffer
from tests.testapp import tasks


def outcome(task_id, status="completed", run_token=None, **fields):
    """An outcome for ``task_id``; without ``run_token``, for a run that is not current."""
    token = run_token or str(uuid.uuid4())
    return Outcome(task_id=task_id, run_token=token, status=status, **fields)


def outcome_of(task, status="completed", **fields):
    """An outcome for the run ``task`` is (its run token)."""
    return outcome(task.id, status, run_token=task.run_token, **fields)


def idle_buffer() -> OutcomeBuffer:
    # Never connected: these tests write nothing.
    db = Database("default", "pq", False, lambda payload: None, lambda: None)
    return OutcomeBuffer(db, "pq")


def test_outcomes_wait_oldest_first_and_a_batch_put_back_goes_ahead_of_newer_ones():
    buffer = idle_buffer()
    assert not buffer and len(buffer) == 0
    first, second, newer = outcome(1), outcome(2), outcome(3)
    buffer.add(first)
    buffer.add(second)
    batch = buffer.take()
    assert batch == [first, second] and not buffer
    buffer.add(newer)  # recorded while the batch was out
    buffer.keep(batch)  # the database did not take it
    assert len(buffer) == 3
    assert buffer.take() == [first, second, newer]


def test_a_task_whose_outcome_waits_is_still_this_workers():
    buffer = idle_buffer()
    buffer.add(outcome(11))
    buffer.add(outcome(12, "failed", error_code="exception"))
    assert buffer.task_ids() == [11, 12]  # orphan recovery must leave these alone


# -- against the database -------------------------------------------------------------


@pytest.fixture
def database(transactional_db: None) -> Iterator[Database]:
    db = Database("default", pq_settings.NOTIFY_CHANNEL, False, lambda payload: None, lambda: None)
    try:
        yield db
    finally:
        db.close()


def claim(db: Database, count: int) -> list[Claimed]:
    """``count`` fresh tasks, claimed with the worker's own statement."""
    for number in range(count):
        pq.enqueue(tasks.add, number, 1, max_attempts=1)
    config = WorkerConfig()
    rows = db.execute(
        "claim", sql.claim_statement(config), sql.claim_params(config, str(uuid.uuid4()), count)
    )
    assert rows is not None
    claimed, _ = sql.claimed_rows(rows)
    assert len(claimed) == count
    return sorted(claimed, key=lambda task: task.id)


def rows(*claimed: Claimed) -> list[tuple[str, str, str]]:
    tasks_by_id = Task.objects.in_bulk([task.id for task in claimed])
    return [
        (tasks_by_id[t.id].status, tasks_by_id[t.id].error_code, tasks_by_id[t.id].error)
        for t in claimed
    ]


def test_one_by_one_each_outcome_lands_alone_and_an_unstorable_one_as_a_failure(database):
    good, bad_result, bad_error = claim(database, 3)
    buffer = OutcomeBuffer(database, pq_settings.NOTIFY_CHANNEL)
    batch = [
        outcome_of(good, result="2"),
        outcome_of(bad_result, result="not JSON"),
        # NUL cannot be stored in text; the failure keeps its own cause.
        outcome_of(bad_error, "failed", error_code="timeout", error="\x00"),
    ]
    buffer.write_one_by_one(batch)
    assert not buffer  # all written: nothing waits
    (good_row, result_row, error_row) = rows(good, bad_result, bad_error)
    assert good_row == ("completed", "", "")
    assert result_row[:2] == ("failed", "exception")
    assert result_row[2].startswith("The task's outcome could not be stored: ")
    assert error_row[:2] == ("failed", "timeout")
    assert error_row[2].startswith("The task's outcome could not be stored: ")


def test_what_a_lost_connection_leaves_unwritten_waits_for_the_next_turn(database, monkeypatch):
    first, second, third = claim(database, 3)
    buffer = OutcomeBuffer(database, pq_settings.NOTIFY_CHANNEL)
    newer = outcome(999)
    buffer.add(newer)
    batch = [outcome_of(task, result="2") for task in (first, second, third)]
    # The connection dies right after the first outcome committed.
    monkeypatch.setenv(faults.CUT_VARIABLE, "finish_one:committed:1")
    monkeypatch.setattr(faults, "_cuts", None)
    monkeypatch.setattr(faults, "_statement_passes", {})
    buffer.write_one_by_one(batch)
    assert [status for status, _, _ in rows(first, second, third)] == [
        "completed",
        "running",
        "running",
    ]
    assert buffer.take() == [batch[1], batch[2], newer]


def test_an_outcome_whose_run_token_is_gone_is_refused_and_dropped(database, caplog):
    current, stale = claim(database, 2)
    buffer = OutcomeBuffer(database, pq_settings.NOTIFY_CHANNEL)
    batch = [
        outcome_of(current, result="2"),
        outcome(stale.id, result="2"),  # another token: reaped and re-claimed meanwhile
    ]
    with caplog.at_level(logging.WARNING, logger="django_pq.worker"):
        buffer.write_one_by_one(batch)
    assert [status for status, _, _ in rows(current, stale)] == ["completed", "running"]
    refused = [r for r in caplog.records if "was refused" in r.getMessage()]
    assert [getattr(r, "task_id", None) for r in refused] == [stale.id]
    assert not buffer  # not retried: the row belongs to another verdict now
