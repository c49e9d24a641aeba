"""The worker parent's one long-lived connection: LISTEN, claims, finishes, heartbeats.

It is a plain psycopg connection built from Django's settings for ``PQ_DATABASE``, kept
apart from Django's own connections so forked children never share it. When it breaks,
the worker logs once, reconnects with capped backoff and carries on.

Every statement runs under a name from :data:`~django_pq.worker.faults.STATEMENTS`, so the
fault tests can cut the connection at that statement (inert unless the environment asks).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from django.db import connections
from psycopg.sql import SQL, Identifier

from django_pq.notify import DEFAULT_CHANNEL, SET_CHANNEL
from django_pq.worker.faults import STATEMENTS, cuts_connection

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
        self,
        alias: str,
        channel: str,
        listen: bool,
        on_notify: Callable[[str], None],
        on_reconnect: Callable[[], None],
    ) -> None:
        self.alias = alias
        self.channel = channel
        self.listen = listen
        self.on_notify = on_notify
        self.on_reconnect = on_reconnect
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
            conn.add_notify_handler(lambda notify: self._dispatch(notify.payload))
            if self.channel != DEFAULT_CHANNEL:
                conn.execute(SET_CHANNEL, [self.channel])
            if self.listen:
                # Quoted: pg_notify() names the channel exactly as written, capitals
                # and keywords (PQ_NOTIFY_CHANNEL = "order") included.
                conn.execute(SQL("LISTEN {}").format(Identifier(self.channel)))
        except psycopg.Error as error:
            self._failed(error)
            return False
        if self._reported:
            logger.warning("Database connection restored after %d failed attempts", self._failures)
        self.conn, self._failures, self._reported = conn, 0, False
        # Anything enqueued while we were away sent its NOTIFY to nobody.
        self.on_reconnect()
        return True

    def _dispatch(self, payload: str) -> None:
        # Anyone who can connect may send anything on the channel: what a handler makes of
        # it must never end the worker.
        try:
            self.on_notify(payload)
        except Exception:
            logger.exception("Ignored a notification the worker could not handle: %r", payload)

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

    def execute(self, name: str, sql: str, params: Any = None) -> list[tuple[Any, ...]] | None:
        """Run the statement ``name``; None (and a reconnect later) if the database is
        unreachable."""
        results = self.run_in_transaction(name, [(sql, params)])
        return None if results is None else results[0]

    def run_in_transaction(
        self, name: str, statements: list[tuple[str, Any]]
    ) -> list[list[tuple[Any, ...]]] | None:
        """Run statements in one transaction, pipelined: one commit, one round trip.

        Returns each statement's rows, or None if the connection was lost (the transaction
        may or may not have committed then: a reply lost after the commit looks the same).
        Other database errors propagate, with the transaction rolled back.
        """
        assert name in STATEMENTS, f"add {name!r} to faults.STATEMENTS (and a scenario)"
        if not self.connect() or self.conn is None:
            return None
        try:
            if cuts_connection(name, "sent"):
                logger.warning("Fault injection: %s sent, its reply to be lost", name)
                self._send_and_cut(statements)
            if len(statements) == 1:
                cursor = self.conn.execute(*statements[0])
                results = [cursor.fetchall() if cursor.description else []]
            else:
                with self.conn.transaction(), self.conn.pipeline():
                    cursors = [self.conn.execute(sql, params) for sql, params in statements]
                results = [cursor.fetchall() if cursor.description else [] for cursor in cursors]
        except psycopg.OperationalError as error:
            self.lost(error)
            return None
        if cuts_connection(name, "committed"):
            logger.warning("Fault injection: %s committed, the connection to be lost", name)
            self._cut()
        return results

    @contextlib.contextmanager
    def transaction(self, name: str) -> Iterator[psycopg.Connection[Any] | None]:
        """A transaction for code that runs its own statements on the connection (firing,
        which nests its ``conn.transaction()`` inside as a savepoint).

        Yields None when the database is unreachable. A lost connection inside is handled
        here (the transaction is gone); other errors propagate, rolled back.
        """
        assert name in STATEMENTS, f"add {name!r} to faults.STATEMENTS (and a scenario)"
        if not self.connect() or self.conn is None:
            yield None
            return
        conn, entered = self.conn, False
        try:
            with conn.transaction():
                entered = True
                yield conn
                if cuts_connection(name, "sent"):
                    logger.warning("Fault injection: %s sent, its reply to be lost", name)
                    conn.pgconn.send_query(b"COMMIT")
                    conn.pgconn.flush()
                    self._cut()
                    raise psycopg.OperationalError(f"connection cut after sending {name}")
        except psycopg.OperationalError as error:
            self.lost(error)
            if not entered:  # lost at BEGIN: the caller still gets its (empty) turn
                yield None
            return
        if cuts_connection(name, "committed"):
            logger.warning("Fault injection: %s committed, the connection to be lost", name)
            self._cut()

    def _send_and_cut(self, statements: list[tuple[str, Any]]) -> None:
        """Fault injection: send the statements as one transaction, cut the connection
        before reading the reply, and fail as a lost connection does."""
        assert self.conn is not None
        cursor = psycopg.ClientCursor(self.conn)
        text = "; ".join(cursor.mogrify(sql, params) for sql, params in statements)
        self.conn.pgconn.send_query(f"BEGIN; {text}; COMMIT".encode())
        self.conn.pgconn.flush()
        self._cut()
        raise psycopg.OperationalError("connection cut after sending the statement")

    def _cut(self) -> None:
        """Fault injection: end the TCP (or Unix) stream under psycopg's feet."""
        if self.conn is not None:
            stream = socket.socket(fileno=os.dup(self.conn.fileno()))
            with stream, contextlib.suppress(OSError):
                stream.shutdown(socket.SHUT_RDWR)

    def drain_notifications(self) -> None:
        """Read what the server sent without blocking; handlers see the notifications."""
        if not self.is_connected or self.conn is None:
            return
        try:
            pgconn = self.conn.pgconn
            pgconn.consume_input()
            while (notify := pgconn.notifies()) is not None:
                self._dispatch(notify.extra.decode(errors="replace"))
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                raise psycopg.OperationalError("connection lost")
        except psycopg.Error as error:
            self.lost(error)

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None
