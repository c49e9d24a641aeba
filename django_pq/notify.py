"""The notification protocol: every message on ``PQ_NOTIFY_CHANNEL``, built and parsed here.

Three messages travel on the channel:

- ``t:<epoch>:<queue>``: work is pending in ``queue``, the earliest due at ``<epoch>``
  (seconds since 1970, as Postgres prints ``extract(epoch ...)``);
- ``c:<task id>``: someone asked to cancel a running task;
- ``s:``: a schedule changed.

The statement that makes a task pending (or asks for a cancel) sends its message itself,
so Postgres delivers it when that transaction commits, never before and never after a
rollback. Nothing else in the package formats or splits a payload.

A message is a **hint, never an authority**: any role that can connect may ``NOTIFY`` any
text on the channel. :func:`parse` never raises (garbage is ``None``), and a worker acts on
a message only by asking the database: a ``t:`` makes it claim (the claim decides what is
ready), an ``s:`` makes it look at the schedules, and a ``c:`` stops a child only after the
row itself says so (``is_cancel_requested``, under the run token the child holds).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_BIGINT_MAX = 2**63 - 1
#: ASCII digits only: ``str.isdigit`` also accepts ``'²'``, which ``int()`` refuses.
_CANCEL = re.compile(r"c:([0-9]{1,19})", re.ASCII)
_TASK_READY = re.compile(r"t:([^:]{1,64}):(.{1,100})", re.ASCII | re.DOTALL)
SCHEDULE_CHANGED_PAYLOAD = "s:"


@dataclass(frozen=True)
class TaskReady:
    """Work is pending in ``queue``; the earliest of it is due at ``run_at`` (epoch seconds)."""

    run_at: float
    queue: str


@dataclass(frozen=True)
class CancelRequested:
    """Someone asked to cancel the running task ``task_id`` (to be confirmed in the row)."""

    task_id: int


@dataclass(frozen=True)
class ScheduleChanged:
    """A periodic schedule was added, changed or removed."""


Message = TaskReady | CancelRequested | ScheduleChanged


def parse(payload: object) -> Message | None:
    """The message ``payload`` carries, or None for anything else. Never raises."""
    if not isinstance(payload, str):
        return None
    if payload == SCHEDULE_CHANGED_PAYLOAD:
        return ScheduleChanged()
    if match := _CANCEL.fullmatch(payload):
        task_id = int(match[1])
        return CancelRequested(task_id) if 0 < task_id <= _BIGINT_MAX else None
    if match := _TASK_READY.fullmatch(payload):
        try:
            run_at = float(match[1])
        except ValueError:
            return None
        # An infinite or NaN epoch names no moment a timer could wait for.
        return TaskReady(run_at, match[2]) if math.isfinite(run_at) else None
    return None


def task_ready(run_at: float, queue: str) -> str:
    """The ``t:`` payload, built in Python (tests and tools; statements use the SQL below)."""
    return f"t:{run_at!r}:{queue}"


def cancel_requested(task_id: int) -> str:
    """The ``c:`` payload for ``task_id``."""
    return f"c:{task_id}"


#: The session setting naming the channel on which the database's own functions (the
#: dependencies' triggers, which know no Django settings) announce tasks they release;
#: unset, they use the default channel. Set by django_pq on its connections when
#: PQ_NOTIFY_CHANNEL is not the default.
CHANNEL_SETTING = "django_pq.notify_channel"
DEFAULT_CHANNEL = "django_pq"
SET_CHANNEL = f"SELECT set_config('{CHANNEL_SETTING}', %s, false)"


def task_ready_sql(run_at: str, queue: str) -> str:
    """A SQL expression building the ``t:`` payload from the SQL expressions given."""
    return f"'t:' || extract(epoch FROM {run_at})::text || ':' || {queue}"


def cancel_requested_sql(task_id: str) -> str:
    """A SQL expression building the ``c:`` payload from the SQL expression ``task_id``."""
    return f"'c:' || ({task_id})::text"


def column_arrays(rows: Sequence[Any], attributes: Sequence[str]) -> list[list[Any]]:
    """One list per attribute, for ``unnest(%s, %s, ...)``: many rows in one statement."""
    return [[getattr(row, attribute) for row in rows] for attribute in attributes]


def notifying(
    modifying_sql: str,
    returning: str,
    channel: str = "%s",
    finished_channel: str = "",
    frees_a_slot: str = "",
) -> str:
    """Wrap ``INSERT/UPDATE ... `` so the rows it leaves pending NOTIFY, in one statement.

    The wrapped statement must be followed by ``RETURNING <returning>``, which has to
    include ``status``, ``run_at`` and ``queue``. The channel is the last parameter (or the
    named placeholder ``channel``, for a statement with named parameters). One
    notification per queue carries the earliest ``run_at``, so a worker can both wake for
    ready work and set its timer for future work.

    With ``finished_channel`` (a placeholder; ``returning`` must then include
    ``is_awaited``), the ids of finished rows someone waits on (``task.wait()``) are also
    sent there, comma-separated: a channel no worker listens on, so no worker wakes.

    With ``frees_a_slot`` (a condition on the returned columns), a finished row it holds
    for also wakes the workers of its queue, "due now": its end may let a limited key's
    waiting tasks start.
    """
    finished = ""
    if finished_channel:
        finished = f""",
        finished AS (
            SELECT pg_notify({finished_channel}, string_agg(id::text, ','))
            FROM written
            WHERE is_awaited AND status IN ('completed', 'failed', 'cancelled')
            HAVING count(*) > 0
        )"""
    counted = " AND (SELECT count(*) FROM finished) >= 0" if finished else ""
    return f"""
        WITH written AS ({modifying_sql} RETURNING {returning}),
        notified AS (
            SELECT pg_notify({channel}, {task_ready_sql("min(run_at)", "queue")})
            FROM written WHERE status = 'pending'{f" OR {frees_a_slot}" if frees_a_slot else ""}
            GROUP BY queue
        ){finished}
        SELECT * FROM written WHERE (SELECT count(*) FROM notified) >= 0{counted}
    """


def finished_channel(channel: str) -> str:
    """The channel ``task.wait()`` listens on: the notify channel's, suffixed (kept within
    Postgres's 63-byte identifiers)."""
    return f"{channel.encode()[:57].decode(errors='ignore')}_done"
