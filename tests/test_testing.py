"""django_pq.testing, used the way a project's own tests would use it."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.db import DataError, connection, transaction
from django.test import TestCase, TransactionTestCase

from django_pq.enqueueing import enqueue, upsert
from django_pq.exceptions import PQError
from django_pq.models import Priority, Status
from django_pq.models import Task as TaskRow
from django_pq.testing import (
    CapturedTasks,
    PQTestCaseMixin,
    capture_tasks,
    pq_capture,  # noqa: F401 - the fixture, as a conftest would
    run_pending_tasks,
)
from tests.testapp import tasks
from tests.testapp.models import RunLog

pytestmark = pytest.mark.django_db


# -- capturing ---------------------------------------------------------------------------


def test_capture_sees_only_what_the_block_enqueued() -> None:
    enqueue(tasks.noop)
    with capture_tasks() as captured:
        enqueue(tasks.add, 1, b=2, priority=Priority.HIGH, queue="math", client_id="sum")
    enqueue(tasks.noop)  # after the block: not part of the capture
    assert [task.name for task in captured] == ["tests.testapp.tasks:add"]
    [first] = captured.tasks
    assert (first.args, first.kwargs) == ((1,), {"b": 2})
    assert (first.queue, first.priority, first.client_id) == ("math", 75, "sum")


def test_capture_does_not_see_a_rolled_back_enqueue() -> None:
    with capture_tasks() as captured, pytest.raises(RuntimeError), transaction.atomic():
        enqueue(tasks.add, 1, 2)
        raise RuntimeError
    captured.assert_nothing_enqueued()


def test_assert_enqueued_compares_the_call_and_the_options(pq_capture: CapturedTasks) -> None:  # noqa: F811
    enqueue(tasks.add, 1, b=2, priority=Priority.HIGH)
    enqueue(tasks.add, 5, b=6)

    found = pq_capture.assert_enqueued(tasks.add, 1, b=2, priority=Priority.HIGH)
    assert found.args == (1,)
    pq_capture.assert_enqueued(tasks.add, count=2)
    pq_capture.assert_enqueued(tasks.add, mock.ANY, b=6)
    pq_capture.assert_enqueued("tests.testapp.tasks:add", 5, b=6, priority=Priority.NORMAL)
    pq_capture.assert_not_enqueued(tasks.add, 1, b=2, priority=Priority.LOW)
    pq_capture.assert_not_enqueued(tasks.noop)

    with pytest.raises(AssertionError, match=r"found 0 matching\. Enqueued: #\d+ tests"):
        pq_capture.assert_enqueued(tasks.add, 1, b=3)
    with pytest.raises(AssertionError, match="2 time"):
        pq_capture.assert_enqueued(tasks.add, 5, b=6, count=2)
    with pytest.raises(AssertionError, match=r"Expected no tests\.testapp\.tasks:add"):
        pq_capture.assert_not_enqueued(tasks.add)
    with pytest.raises(AssertionError, match="Expected no task enqueued"):
        pq_capture.assert_nothing_enqueued()


def test_upsert_of_a_new_client_id_is_captured(pq_capture: CapturedTasks) -> None:  # noqa: F811
    upsert(tasks.add, 1, 2, client_id="sum")
    upsert(tasks.add, 3, 4, client_id="sum")
    assert pq_capture.assert_enqueued(tasks.add, count=1).args == (3, 4)


def test_a_capture_read_after_its_block_shows_current_status() -> None:
    with capture_tasks() as captured:
        inside = enqueue(tasks.add, 1, 1)
    run_pending_tasks()
    assert [task.id for task in captured] == [inside.pk]
    assert captured.assert_enqueued(tasks.add, 1, 1).status == Status.COMPLETED


def test_an_upsert_replacing_a_task_from_before_the_capture_is_not_captured() -> None:
    upsert(tasks.add, 1, 2, client_id="older")
    with capture_tasks() as captured:
        upsert(tasks.add, 3, 4, client_id="older")
    captured.assert_nothing_enqueued()


def test_a_database_error_inside_the_block_is_the_error_raised() -> None:
    # The block broke the test's transaction: ending the capture must not replace the
    # error the test is about with "current transaction is aborted".
    with pytest.raises(DataError, match="division by zero"), capture_tasks():
        enqueue(tasks.noop)
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 / 0")


# -- running inline ----------------------------------------------------------------------


def test_inline_run_sees_the_tests_uncommitted_data_and_records_outcomes() -> None:
    RunLog.objects.create(event="fixture", pid=0)
    ok = enqueue(tasks.log_run, "inline")
    broken = enqueue(tasks.raise_error)
    outcomes = {outcome.id: outcome for outcome in run_pending_tasks()}

    assert outcomes[ok.pk].status == Status.COMPLETED
    assert outcomes[ok.pk].result == os.getpid()  # ran in this very process
    assert RunLog.objects.filter(event="run", value="inline").exists()
    assert outcomes[broken.pk].status == Status.FAILED
    assert outcomes[broken.pk].error_code == "exception"
    assert "this task always fails" in outcomes[broken.pk].error
    assert TaskRow.objects.get(pk=broken.pk).status == Status.FAILED
    assert run_pending_tasks() == []


def test_inline_run_retries_at_once_up_to_max_attempts() -> None:
    task = enqueue(tasks.fail_until, 3, "retry", max_attempts=3)
    outcomes = run_pending_tasks()
    assert [(o.attempt, o.status) for o in outcomes] == [
        (1, Status.PENDING),
        (2, Status.PENDING),
        (3, Status.COMPLETED),
    ]
    assert TaskRow.objects.get(pk=task.pk).result == 3


def test_a_failed_query_in_a_task_does_not_break_the_tests_transaction() -> None:
    broken = enqueue(tasks.log_run, "NUL \x00 is refused by Postgres", priority=Priority.HIGH)
    after = enqueue(tasks.log_run, "after")
    outcomes = {outcome.id: outcome for outcome in run_pending_tasks()}
    assert outcomes[broken.pk].status == Status.FAILED
    assert "DataError" in outcomes[broken.pk].error or "NUL" in outcomes[broken.pk].error
    assert outcomes[after.pk].status == Status.COMPLETED
    assert RunLog.objects.filter(value="after").exists()  # the transaction is still usable


def test_scheduled_tasks_run_only_when_asked_and_queues_filter() -> None:
    later = enqueue(tasks.add, 1, 1, run_at=timedelta(hours=1))
    other = enqueue(tasks.add, 2, 2, queue="other")
    assert [o.id for o in run_pending_tasks(queues=["default"])] == []
    assert [o.id for o in run_pending_tasks(queues=["other"])] == [other.pk]
    assert [o.id for o in run_pending_tasks(include_scheduled=True)] == [later.pk]


def test_a_task_that_keeps_enqueueing_is_bounded() -> None:
    for _ in range(3):
        enqueue(tasks.noop)
    with pytest.raises(PQError, match="ran 2 tasks and more are still pending"):
        run_pending_tasks(max_tasks=2)


# -- running forked ----------------------------------------------------------------------


def test_fork_isolation_refuses_inside_the_tests_transaction() -> None:
    with pytest.raises(PQError, match="TransactionTestCase"):
        run_pending_tasks(isolation="fork")


@pytest.mark.django_db(transaction=True)
def test_fork_isolation_runs_each_task_in_a_child_like_the_worker(settings: Any) -> None:
    settings.PQ_KILL_GRACE = 0.1
    ok = enqueue(tasks.pid)
    crash = enqueue(tasks.exit_hard)
    slow = enqueue(tasks.sleep, 30, "slow", max_runtime=0.5)
    outcomes = {outcome.id: outcome for outcome in run_pending_tasks(isolation="fork")}

    assert outcomes[ok.pk].status == Status.COMPLETED
    assert outcomes[ok.pk].result != os.getpid()
    assert outcomes[crash.pk].error_code == "exception"
    assert "exited with status 7" in outcomes[crash.pk].error
    assert outcomes[slow.pk].error_code == "timeout"


# -- TestCase classes --------------------------------------------------------------------


class OrderLikeTests(PQTestCaseMixin, TestCase):
    def test_capture_assert_and_run(self) -> None:
        with self.captureEnqueuedTasks() as captured:
            enqueue(tasks.add, 2, 3)
        self.assertTaskEnqueued(captured, tasks.add, 2, 3)
        [outcome] = self.runPendingTasks()
        assert outcome.result == 5


class ForkedTests(PQTestCaseMixin, TransactionTestCase):
    def test_run_forked(self) -> None:
        enqueue(tasks.add, 2, 3)
        [outcome] = self.runPendingTasks(isolation="fork")
        assert (outcome.status, outcome.result) == (Status.COMPLETED, 5)
