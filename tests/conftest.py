"""Shared fixtures. The database is a real PostgreSQL (see devdb.py at the repository root)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import NoReturn

import psycopg
import pytest
from django.db import connection, models

#: The run's own temporary directory (see ``pytest_configure``), and what it replaced.
_RUN_TMP: dict[str, str | None] = {}


def pytest_configure(config: pytest.Config) -> None:
    """Give the run a temporary directory of its own, removed when the run ends.

    Worker logs, marker files, Chromium's profiles and whatever the subprocesses put in
    ``$TMPDIR`` all land there, so a run leaves nothing behind in the machine's /tmp.
    (The throwaway PostgreSQL of tests/settings.py starts before this and cleans up
    after itself.) Other users must reach into it: the private clusters run as postgres.
    """
    directory = tempfile.mkdtemp(prefix="pq-tests-")
    os.chmod(directory, 0o755)
    _RUN_TMP.update(directory=directory, environ=os.environ.get("TMPDIR"))
    os.environ["TMPDIR"] = tempfile.tempdir = directory


def pytest_unconfigure(config: pytest.Config) -> None:
    directory = _RUN_TMP.pop("directory", None)
    if directory is None:
        return
    previous = _RUN_TMP.pop("environ", None)
    if previous is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = previous
    tempfile.tempdir = None
    shutil.rmtree(directory, ignore_errors=True)


def in_ci() -> bool:
    """Whether this is a CI run (``CI`` set, as CI services do), where nothing may skip."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> NoReturn:
    """A tool the test needs is missing: skip, with ``reason`` in the summary; fail in CI."""
    if in_ci():
        pytest.fail(f"{reason} (required with CI={os.environ['CI']})")
    pytest.skip(reason)


@contextlib.contextmanager
def constraints_dropped(model: type[models.Model], *names: str) -> Iterator[None]:
    """Drop ``model``'s checks ``names`` for a while, then put them back.

    For rows a database written before those checks existed (or one whose checks were
    dropped by hand) can still hold: the worker must survive them too. The rows that
    break the checks must be gone before they are put back.
    """
    constraints = [c for c in model._meta.constraints if c.name in names]
    assert len(constraints) == len(names), f"no such constraints on {model.__name__}: {names}"
    table = model._meta.db_table
    with connection.cursor() as cursor:
        for name in names:
            cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    try:
        yield
    finally:
        with connection.schema_editor() as editor:
            for constraint in constraints:
                editor.add_constraint(model, constraint)


def connect_like_django(autocommit: bool = True) -> psycopg.Connection:
    """A connection of our own to the database Django's test run is using."""
    params = connection.settings_dict
    return psycopg.connect(
        dbname=params["NAME"],
        user=params["USER"] or None,
        password=params["PASSWORD"] or None,
        host=params["HOST"] or None,
        port=params["PORT"] or None,
        autocommit=autocommit,
    )


@pytest.fixture
def watcher(transactional_db: None) -> Iterator[psycopg.Connection]:
    """A second connection that sees only what others have committed."""
    with contextlib.closing(connect_like_django()) as conn:
        yield conn


@pytest.fixture
def listener(transactional_db: None) -> Iterator[psycopg.Connection]:
    """A connection LISTENing on django-pq's channel."""
    from django_pq.conf import pq_settings

    with contextlib.closing(connect_like_django()) as conn:
        conn.execute(f"LISTEN {pq_settings.NOTIFY_CHANNEL}")
        yield conn


def received(
    conn: psycopg.Connection, timeout: float = 0.2, expect: int | None = None
) -> list[str]:
    """Notification payloads that arrive within ``timeout`` seconds (or once ``expect`` have).

    Absence can be asserted with a short timeout without racing anything: Postgres
    delivers notifications at commit, so none can be in flight for an open transaction.
    """
    return [notify.payload for notify in conn.notifies(timeout=timeout, stop_after=expect)]
