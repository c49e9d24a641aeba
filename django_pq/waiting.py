"""``task.wait()``: block until a task has ended, woken by a notification.

The waiter marks the row ``is_awaited``; the statements that end a run (the worker's
finish, a cancel) then send the row's id on the notify channel's ``_done`` sibling, which
no worker listens on, so waiting costs the workers nothing. The waiter also re-reads the
row every few seconds, in case a notification was missed (a reconnect, a row ended by
hand).
"""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from django.db import connections

from django_pq.conf import pq_settings
from django_pq.exceptions import PQError, TaskRefused
from django_pq.notify import finished_channel
from django_pq.store.tasks import MARK_AWAITED, TASK_STATUS

if TYPE_CHECKING:
    from django_pq.models import Task

#: Seconds between re-reads of the row while no notification comes.
RECHECK_INTERVAL = 2.0

_FINISHED = ("completed", "failed", "cancelled")


def _seconds(timeout: float | timedelta) -> float:
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or math.isnan(seconds):
        raise TaskRefused(f"wait(timeout=...) must be seconds or a timedelta; got {timeout!r}.")
    return max(float(seconds), 0.0)


def wait_for(task: Task, timeout: float | timedelta) -> Task:
    """See :meth:`Task.wait`."""
    import psycopg
    from psycopg import sql

    seconds = _seconds(timeout)
    alias = pq_settings.DATABASE
    if connections[alias].in_atomic_block:
        raise PQError(
            "task.wait() inside transaction.atomic() would wait forever: no worker can see "
            "the task until this transaction commits. Commit first, then wait."
        )
    deadline = time.monotonic() + seconds
    params = connections[alias].get_connection_params()
    with psycopg.connect(**params, autocommit=True) as conn:
        channel = finished_channel(pq_settings.NOTIFY_CHANNEL)
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        conn.execute(MARK_AWAITED, [task.pk])  # after LISTEN: an end from now on is heard
        while True:
            row = conn.execute(TASK_STATUS, [task.pk]).fetchone()
            if row is None:
                raise type(task).DoesNotExist(f"Task {task.pk} was deleted while waited on.")
            if row[0] in _FINISHED:
                task.refresh_from_db(using=alias)
                return task
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"Task {task.pk} has not ended after {seconds:g} s (it is {row[0]})."
                )
            for _ in conn.notifies(timeout=min(left, RECHECK_INTERVAL), stop_after=1):
                pass
