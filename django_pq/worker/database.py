"""The worker parent's one long-lived connection: LISTEN, claims, finishes, heartbeats.

It is a plain psycopg connection built from Django's settings for ``PQ_DATABASE``, kept
apart from Django's own connections so forked children never share it. When it breaks,
the worker logs once, reconnects with capped backoff and carries on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import psycopg
from django.db import connections

logger = logging.getLogger("django_pq.worker")

# OPTIONS keys that Django interprets itself rather than passing to libpq.
_DJANGO_ONLY_OPTIONS = {
    "isolation_level",
    "server_side_binding",
    "assume_role",
    "pool",
    "cursor_factory",
}


def connection_params(alias: str) -> dict[str, Any]:
    settings = connections[alias].settings_dict
    params: dict[str, Any] = {
        "dbname": settings.get("NAME") or None,
        "user": settings.get("USER") or None,
        "password": settings.get("PASSWORD") or None,
        "host": settings.get("HOST") or None,
        "port": settings.get("PORT") or None,
    }
    options = settings.get("OPTIONS") or {}
    params.update({k: v for k, v in options.items() if k not in _DJANGO_ONLY_OPTIONS})
    return {k: v for k, v in params.items() if v is not None}


class Database:
    """A reconnecting autocommit connection that collects notifications as they arrive."""

    def __init__(
        self, alias: str, channel: str, listen: bool, on_notify: Callable[[str], None]
    ) -> None:
        self.alias = alias
        self.channel = channel
        self.listen = listen
        self.on_notify = on_notify
        self.conn: psycopg.Connection[Any] | None = None
        self._failures = 0
        self._next_attempt = 0.0
        self._reported = False

    @property
    def is_connected(self) -> bool:
        return self.conn is not None and not self.conn.closed and not self.conn.broken

    def fileno(self) -> int | None:
        return self.conn.fileno() if self.is_connected and self.conn is not None else None

    def connect(self) -> bool:
        """Try to (re)connect, respecting the backoff. Returns whether connected."""
        if self.is_connected:
            return True
        if time.monotonic() < self._next_attempt:
            return False
        try:
            params = connection_params(self.alias)
            if not self.listen:
                # Behind a pooler in transaction mode (which is why LISTEN is off) a
                # prepared statement may meet another server session: don't prepare.
                params.setdefault("prepare_threshold", None)
            conn = psycopg.connect(
                **params,
                autocommit=True,
                application_name=f"pq_worker:{os.getpid()}",
                connect_timeout=5,
            )
            conn.add_notify_handler(lambda notify: self.on_notify(notify.payload))
            if self.listen:
                conn.execute(f"LISTEN {self.channel}")  # channel is a checked identifier
        except psycopg.Error as error:
            self._failed(error)
            return False
        if self._reported:
            logger.warning("Database connection restored after %d failed attempts", self._failures)
        self.conn, self._failures, self._reported = conn, 0, False
        # Anything enqueued while we were away sent its NOTIFY to nobody.
        self.on_notify("reconnected")
        return True

    def _failed(self, error: BaseException) -> None:
        self._failures += 1
        delay = min(5.0, 0.1 * 2 ** min(self._failures, 10))
        self._next_attempt = time.monotonic() + delay
        if not self._reported:
            logger.error("Database unavailable (%s); retrying with backoff", str(error).strip())
            self._reported = True

    def lost(self, error: BaseException) -> None:
        """Drop a connection that failed mid-statement; the next call reconnects."""
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
        self.conn = None
        self._failed(error)

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]] | None:
        """Run one statement; None (and a reconnect later) if the database is unreachable."""
        if not self.connect() or self.conn is None:
            return None
        try:
            cursor = self.conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []
        except psycopg.OperationalError as error:
            self.lost(error)
            return None

    def run_in_transaction(
        self, statements: list[tuple[str, Any]]
    ) -> list[list[tuple[Any, ...]]] | None:
        """Run statements in one transaction, pipelined: one commit, one round trip.

        Returns each statement's rows, or None if the database is unreachable (nothing was
        committed then). Other database errors propagate, with the transaction rolled back.
        """
        if not self.connect() or self.conn is None:
            return None
        try:
            with self.conn.transaction(), self.conn.pipeline():
                cursors = [self.conn.execute(sql, params) for sql, params in statements]
            return [cursor.fetchall() if cursor.description else [] for cursor in cursors]
        except psycopg.OperationalError as error:
            self.lost(error)
            return None

    def drain_notifications(self) -> None:
        """Read what the server sent without blocking; handlers see the notifications."""
        if not self.is_connected or self.conn is None:
            return
        try:
            pgconn = self.conn.pgconn
            pgconn.consume_input()
            while (notify := pgconn.notifies()) is not None:
                self.on_notify(notify.extra.decode())
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                raise psycopg.OperationalError("connection lost")
        except psycopg.Error as error:
            self.lost(error)

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None
