"""The migrations describe the models: a model change without its migration fails here."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command


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
