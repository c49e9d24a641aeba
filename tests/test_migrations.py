"""The migrations describe the models: a model change without its migration fails here."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from django_pq.timing import EARLIEST_MOMENT, LATEST_MOMENT, LONGEST_INTERVAL


@pytest.mark.django_db
def test_no_missing_migrations() -> None:
    out = StringIO()
    try:
        call_command("makemigrations", "django_pq", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit:  # makemigrations --check exits 1 when a migration is missing
        pytest.fail(
            "django_pq's models and migrations differ; run "
            "`python -m django makemigrations django_pq --settings tests.settings`:\n"
            + out.getvalue()
        )


@pytest.mark.django_db
def test_migrations_apply_on_an_empty_schema() -> None:
    """Every migration is reversible, and they rebuild the tables from nothing."""
    out = StringIO()
    call_command("migrate", "django_pq", "zero", verbosity=0, stdout=out)
    call_command("migrate", "django_pq", verbosity=0, stdout=out)
    call_command("sqlmigrate", "django_pq", "0001", stdout=out)
    assert "pq_tasks" in out.getvalue()


def _sql(statement: str) -> list[tuple[object, ...]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement)
        return cursor.fetchall() if cursor.description else []


# Transactional: each migration commits on its own, as on a real install (and the rows'
# deferred foreign-key checks are not pending under its ALTER TABLE).
@pytest.mark.django_db(transaction=True)
def test_data_constraints_apply_over_rows_that_break_them() -> None:
    """0003 must not fail on an install whose rows predate its constraints: it brings
    each to the nearest value the worker can act on, and pauses what it cannot fix."""
    call_command("migrate", "django_pq", "0002", verbosity=0)
    _sql("""
        INSERT INTO pq_tasks (queue, name, payload, priority, status, attempts, max_attempts,
            error, error_code, is_cancel_requested, run_at, created_at, max_runtime)
        VALUES ('default', 'a:never', '{}', 50, 'pending', 0, 1, '', '', false,
                'infinity', '-infinity', 'NaN'),
               ('default', 'a:first', '{}', 50, 'pending', 0, 1, '', '', false,
                '-infinity', now(), 'Infinity');
        INSERT INTO pq_periodic (name, key, payload, priority, queue, run_every, timezone,
            next_run, active, skipped_runs, is_declared, created_at, updated_at, max_attempts)
        VALUES ('a:huge', '', '{}', 50, 'default', '178000000 years', 'UTC', 'infinity',
                true, 0, false, now(), now(), 0);
        INSERT INTO pq_workers (id, hostname, pid, queues, priorities, min_priority,
            concurrency, started_at, heartbeat_at, lease_expires_at, version)
        VALUES (gen_random_uuid(), 'box', 1, '[]', '[]', 500, 0, now(), now(), 'infinity', '');
    """)
    call_command("migrate", "django_pq", verbosity=0)
    tasks = _sql("SELECT name, run_at, created_at, max_runtime FROM pq_tasks ORDER BY run_at, name")
    earliest, latest = EARLIEST_MOMENT, LATEST_MOMENT
    assert tasks == [
        ("a:first", earliest, tasks[0][2], None),
        ("a:never", latest, earliest, None),
    ]
    ((active, error, next_run, max_attempts, run_every),) = _sql(
        "SELECT active, error, next_run, max_attempts, run_every FROM pq_periodic"
    )
    assert (active, next_run, max_attempts, run_every) == (False, latest, 1, LONGEST_INTERVAL)
    assert "Paused by migration 0003: run_every 178000000 years" in error
    assert _sql("SELECT concurrency, min_priority, lease_expires_at FROM pq_workers") == [
        (1, 100, latest)
    ]
