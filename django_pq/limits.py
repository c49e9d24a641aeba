"""Flow limits at run time: write ``PQ_LIMITS`` to the database, pause and resume keys,
and read each key's numbers. (What a limit means: :mod:`django_pq.flow_limits`.)

The claim reads ``pq_limits`` and ``pq_flow_keys`` on every round, so each of these takes
effect on the next claim of every worker, without a restart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import connections

from django_pq.conf import pq_settings
from django_pq.exceptions import TaskRefused
from django_pq.flow_limits import InvalidLimit, check_key, parse_limits
from django_pq.store import flow as store
from django_pq.store.flow import KeyNumbers

__all__ = [
    "KeyNumbers",
    "busy_keys",
    "describe_limit",
    "key_numbers",
    "pause_key",
    "resume_key",
    "sync_limits",
]


def sync_limits(using: str | None = None) -> tuple[int, int]:
    """Write the ``PQ_LIMITS`` setting to ``pq_limits``: (limits written, limits the
    setting no longer names deleted). Workers do it on start; ``manage.py pq_limits
    --sync`` after a deploy that changed the setting. Raises :class:`TaskRefused` for an
    invalid limit (``manage.py check`` reports it too, as ``django_pq.E024``)."""
    try:
        limits = parse_limits(getattr(settings, "PQ_LIMITS", None))
    except InvalidLimit as error:
        raise TaskRefused(str(error)) from None
    return store.sync_limits(using or pq_settings.DATABASE, limits)


def _keys(keys: Iterable[str]) -> list[str]:
    try:
        checked = [check_key("a flow key", key) for key in keys]
    except InvalidLimit as error:
        raise TaskRefused(str(error)) from None
    if not checked:
        raise TaskRefused("Name at least one flow key (a task's limit_key) to pause or resume.")
    return [key for key in checked if key is not None]


def pause_key(*keys: str) -> list[str]:
    """Pause flow keys: their pending tasks wait (running ones finish). Any key may be
    paused, limited or not. Joins the caller's transaction; returns the keys."""
    return store.set_paused(
        pq_settings.DATABASE, _keys(keys), paused=True, release=False, channel=""
    )


def resume_key(*keys: str, release: bool = True) -> list[str]:
    """Resume paused flow keys and wake the workers for their tasks. ``release`` also lets
    an ordered key held by a task that failed for good go on with the next."""
    return store.set_paused(
        pq_settings.DATABASE,
        _keys(keys),
        paused=False,
        release=release,
        channel=pq_settings.NOTIFY_CHANNEL,
    )


def describe_limit(key: KeyNumbers) -> str:
    """A key's limit in words: "2 at once, 20/s (api:*)", "in order (seq:*)", "unlimited"."""
    if key.limit is None:
        return "unlimited"
    parts = ["in order"] if key.ordered else []
    if key.concurrency and not key.ordered:
        parts.append(f"{key.concurrency} at once")
    if key.rate:
        parts.append(key.rate)
    return f"{', '.join(parts)} ({key.limit})"


def key_numbers(keys: Iterable[str], using: str | None = None) -> list[KeyNumbers]:
    """The numbers of each flow key of ``keys`` the claim has met or staff paused."""
    return _read(store.KEY_NUMBERS, {"keys": list(keys)}, using)


def busy_keys(limit: int = 50, using: str | None = None) -> list[KeyNumbers]:
    """The flow keys with tasks waiting or running, or paused or held: most waiting first."""
    return _read(store.BUSY_KEYS, {"limit": limit}, using)


def _read(statement: str, params: dict[str, Any], using: str | None) -> list[KeyNumbers]:
    with connections[using or pq_settings.DATABASE].cursor() as cursor:
        cursor.execute(statement, params)
        rows = cursor.fetchall()
    return [KeyNumbers(*row) for row in rows]
