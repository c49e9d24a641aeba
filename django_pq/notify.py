"""Waking workers: NOTIFY sent by the same statement that makes a task pending.

Payloads are ``t:<earliest run_at epoch>:<queue>`` (work is pending), ``c:<task id>`` (a
running task was cancelled) and ``s:`` (a schedule changed; sent by ``schedules.py``).
Postgres delivers them when the writing transaction commits, never before, and never after
a rollback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def column_arrays(rows: Sequence[Any], attributes: Sequence[str]) -> list[list[Any]]:
    """One list per attribute, for ``unnest(%s, %s, ...)``: many rows in one statement."""
    return [[getattr(row, attribute) for row in rows] for attribute in attributes]


def notifying(modifying_sql: str, returning: str) -> str:
    """Wrap ``INSERT/UPDATE ... `` so the rows it leaves pending NOTIFY, in one statement.

    The wrapped statement must be followed by ``RETURNING <returning>``, which has to
    include ``status``, ``run_at`` and ``queue``. The channel is the last parameter. One
    notification per queue carries the earliest ``run_at``, so a worker can both wake for
    ready work and set its timer for future work.
    """
    return f"""
        WITH written AS ({modifying_sql} RETURNING {returning}),
        notified AS (
            SELECT pg_notify(%s, 't:' || extract(epoch FROM min(run_at))::text || ':' || queue)
            FROM written WHERE status = 'pending' GROUP BY queue
        )
        SELECT * FROM written WHERE (SELECT count(*) FROM notified) >= 0
    """
