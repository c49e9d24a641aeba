"""A schedule row no worker can fire is disabled with its error; workers and the other
schedules carry on. Every worker fires every schedule whatever its --queue, so before
this one bad row crash-looped them all."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection

import django_pq as pq
from django_pq.models import Periodic, Task
from tests.conftest import constraints_dropped
from tests.testapp import tasks
from tests.worker.conftest import wait_until

#: The checks (from migration 0003) that would refuse some poison outright; a database
#: written before it, or one whose constraints were dropped, can still hold such rows.
ROW_CHECKS = [
    "pq_periodic_next_run_finite",
    "pq_periodic_interval_positive",
    "pq_periodic_max_attempts_min",
]

#: key: (what a raw writer sets, what the stored error must say).
POISON = {
    "never-fires": ("run_every = NULL, cron = '0 0 30 2 *'", "cron '0 0 30 2 *' never fires"),
    "not-cron": ("run_every = NULL, cron = 'every day at noon'", "must have five fields"),
    "bad-field": ("run_every = NULL, cron = '61 * * * *'", "cron '61 * * * *' is not valid"),
    "unknown-zone": (
        "run_every = NULL, cron = '* * * * *', timezone = 'Mars/Olympus_Mons'",
        "timezone 'Mars/Olympus_Mons' is not a known IANA time zone",
    ),
    "huge-interval": (
        "run_every = '178000000 years'",
        "run_every '178000000 years' is out of range",
    ),
    "past-9999": ("run_every = '3000000 days'", "would fall after 9999-12-30"),
    "minus-infinity": ("next_run = '-infinity'", "next_run '-infinity' is out of range"),
    "infinity": ("next_run = 'infinity'", "next_run 'infinity' is out of range"),
    "no-attempts": ("max_attempts = 0", "pq_tasks_max_attempts_min"),
}


#: Values the firing copies to the run as they are: the run fails alone, with its code.
FIREABLE = {
    "not-allowed": ("name = 'os:system', payload = '{\"args\": [\"true\"]}'", "unknown_task"),
    "not-an-object": ("payload = '[1, 2]'", "bad_payload"),
}


def sql(statement: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement)


@pytest.fixture
def without_row_checks(transactional_db: None) -> Iterator[None]:
    """Drop the checks that would refuse the poison; put them back afterwards."""
    with constraints_dropped(Periodic, *ROW_CHECKS):
        yield
        sql("DELETE FROM pq_tasks")
        sql("DELETE FROM pq_periodic")


def poison(key: str, assignments: str) -> Periodic:
    """A schedule made through the API, then broken by SQL as any writer could."""
    periodic = pq.schedule(tasks.noop, key=key, run_every=60)
    due = "" if "next_run" in assignments else ", next_run = now()"
    sql(f"UPDATE pq_periodic SET {assignments}{due} WHERE id = {periodic.pk}")
    return periodic


def test_poison_schedules_are_disabled_and_the_rest_keep_firing(without_row_checks, start_worker):
    rows = {key: poison(key, assignments) for key, (assignments, _) in POISON.items()}
    hostile = {key: poison(key, assignments) for key, (assignments, _) in FIREABLE.items()}
    healthy = pq.schedule(tasks.noop, key="healthy", run_every=1, max_concurrent=None)
    # Started with the poison already in the table: as after a restart.
    workers = [start_worker("--concurrency", "1"), start_worker("--queue", "other")]

    def disabled() -> dict[str, Periodic]:
        found = {p.key: p for p in Periodic.objects.filter(key__in=POISON, active=False)}
        return found if len(found) == len(POISON) else {}

    try:
        found = wait_until(disabled, 60, "every poison schedule to be disabled")
    except AssertionError:
        states = list(Periodic.objects.values_list("key", "active", "error"))
        raise AssertionError(f"{states}\n" + "\n".join(w.output() for w in workers)) from None
    runs = Task.objects.filter(periodic=healthy, status="completed")
    before = runs.count()
    wait_until(lambda: runs.count() >= before + 3, 60, "the healthy schedule to keep firing")
    for key, (_, expected) in POISON.items():
        assert expected in found[key].error, (key, found[key].error)
        assert found[key].error.endswith("Fix the schedule, then resume it.")
    assert not Task.objects.filter(periodic__in=rows.values()).exists()
    for key, (_, code) in FIREABLE.items():
        failed = Task.objects.filter(periodic=hostile[key], status="failed", error_code=code)
        wait_until(failed.exists, 30, f"the run of {key} to fail with {code}")
    for worker in workers:
        assert worker.process.poll() is None, worker.output()
        assert "Traceback" not in worker.output(), worker.output()
