"""Shared fixtures. The database is a real PostgreSQL (see devdb.py at the repository root)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
import pytest
from django.db import connection


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
