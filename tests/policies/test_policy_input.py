"""Bad task policies are refused where they are given, and no row a policy column can
hold stops the statement that records a run's end."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection

import django_pq as pq
from django_pq.declared_tasks import task as declare
from django_pq.models import Task
from django_pq.testing import run_pending_tasks
from tests.testapp import policy_tasks, tasks

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: pq.Retry(0), "max_attempts"),
        (lambda: pq.Retry("3"), "max_attempts"),
        (lambda: pq.Retry(3, on=["exploded"]), "'exploded', which is not a way a task can die"),
        (lambda: pq.Retry(3, on="unknown_task"), "not a way a task can die"),
        (lambda: pq.Retry(3, limits={"gone": 1}), "'gone'"),
        (lambda: pq.Retry(3, limits={"memory": -1}), "retries >= 0"),
        (lambda: pq.Retry(3, delay=-1), "delay"),
        (lambda: pq.Retry(3, delay=float("nan")), "delay"),
        (lambda: pq.Retry(3, max_delay=float("inf")), "max_delay"),
        (lambda: pq.Retry(3, factor=0.5), "factor"),
        (lambda: pq.Retry(3, jitter=2), "jitter"),
        (lambda: pq.Retry(3, exceptions=[int]), "is not one"),
        (lambda: pq.Retry(3, ignore=["ValueError"]), "is not one"),
        (lambda: pq.Retry(3, delay=lambda attempt: -attempt), "returned for attempt 1"),
        (lambda: pq.Retry(3, delay=lambda attempt: 1 / 0), "ZeroDivisionError"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_option(make, message):
    with pytest.raises(pq.TaskRefused, match=re.escape(message)):
        make()


def test_a_callable_delay_is_tabled_per_attempt_at_enqueue():
    task = pq.enqueue(tasks.noop, retry=pq.Retry(4, delay=lambda attempt: attempt * 10))
    assert task.retry_policy["delays"] == [10.0, 20.0, 30.0]
    assert task.max_attempts == 4


def test_timedelta_delays_are_seconds():
    policy = pq.Retry(2, delay=timedelta(minutes=1), max_delay=timedelta(hours=2)).as_json()
    assert (policy["delay"], policy["max_delay"]) == (60.0, 7200.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: pq.enqueue(tasks.noop, retry="often"), "pq.Retry policy"),
        (lambda: pq.enqueue(tasks.noop, retry=pq.Retry(3), max_attempts=2), "contradicts"),
        (lambda: declare(queue="x", run_at=timedelta(1))(tasks.noop), "'run_at'"),
        (lambda: declare(retries=3)(tasks.noop), "unknown option(s) 'retries'"),
        (lambda: declare(priority=500)(tasks.noop), "priority"),
        (lambda: declare(retry=3)(tasks.noop), "pq.Retry policy"),
        (lambda: declare(lambda: None), "lambda"),
    ],
)
def test_bad_options_are_refused_and_nothing_is_written(call, message):
    before = Task.objects.count()
    with pytest.raises(pq.TaskRefused, match=re.escape(message)):
        call()
    assert Task.objects.count() == before


def test_a_declared_task_keeps_its_name_and_stays_a_function():
    assert policy_tasks.declared_flaky.__name__ == "declared_flaky"
    prepared = policy_tasks.declared_flaky.prepare("k", 0)
    assert prepared.name == "tests.testapp.policy_tasks:declared_flaky"
    assert (prepared.queue, prepared.max_attempts) == ("policies", 3)
    assert policy_tasks.declared_flaky("direct call", 0) == 1


def test_retry_none_at_the_call_drops_the_declared_policy():
    task = policy_tasks.declared_flaky.enqueue("k", 0, retry=None)
    assert (task.retry_policy, task.max_attempts) == (None, 1)


def test_upsert_replaces_the_policy_with_the_version():
    first = pq.upsert(tasks.noop, client_id="u", retry=pq.Retry(3))
    second = pq.upsert(tasks.noop, client_id="u")
    assert first.pk == second.pk
    assert (second.retry_policy, second.max_attempts) == (None, 1)


HOSTILE_POLICIES = [
    "null",
    '"exception"',
    "[1, 2]",
    "42",
    '{"on": 5}',
    '{"on": ["exception"], "delay": "soon", "factor": [], "jitter": {}}',
    '{"on": ["exception"], "delay": 1e300, "factor": 1e300, "max_delay": 1e300, "jitter": 1e9}',
    '{"on": ["exception"], "delays": "x"}',
    '{"on": ["exception"], "delays": [], "limits": []}',
    '{"on": {"exception": true}, "limits": {"exception": "many"}, "ignore": "all"}',
    '{"on": ["exception"], "exceptions": 7, "limits": {"exception": -5}}',
]
HOSTILE_COUNTS = ["null", '"x"', "[1]", '{"exception": "many"}', '{"exception": 1e400}', "-3"]


@pytest.mark.parametrize("policy", HOSTILE_POLICIES)
@pytest.mark.parametrize("counts", HOSTILE_COUNTS)
def test_any_policy_and_counts_a_row_holds_get_a_verdict(policy, counts):
    task = pq.enqueue(tasks.raise_error, max_attempts=2)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE pq_tasks SET retry_policy = %s::jsonb, failure_counts = %s::jsonb "
            "WHERE id = %s",
            [policy, counts, task.pk],
        )
    [outcome] = run_pending_tasks(max_tasks=1)[:1] or [None]
    assert outcome is not None
    task.refresh_from_db()
    assert task.status in ("pending", "failed")
    assert task.retry_decision["error_code"] == "exception"
    assert task.retry_decision["rule"] in (
        "retry",
        "not_on",
        "ignored",
        "not_listed",
        "limit",
        "budget",
    )
