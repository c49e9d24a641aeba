"""Statements of flow control: the limit that governs a key, writing ``PQ_LIMITS`` to
``pq_limits``, pausing, resuming and releasing keys, and each key's numbers.

The claim itself (in :mod:`django_pq.store.worker`) reads these tables; nothing here
runs on the worker's per-task path except :func:`governing`, which the claim embeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connections

from django_pq.flow_limits import FlowLimit
from django_pq.notify import task_ready_sql


@dataclass(frozen=True)
class KeyNumbers:
    """One flow key as the claim sees it now (a row of :data:`KEY_NUMBERS`)."""

    key: str
    concurrency: int | None
    rate: str | None
    ordered: bool
    is_paused: bool
    is_held: bool
    running: int
    waiting: int
    #: Rate tokens spent out of the burst (0: the bucket is full); None without a rate.
    rate_spent: float | None
    #: The limit's key or pattern that governs this key; None: unlimited.
    limit: str | None


_LIMIT_COLUMNS = "l.concurrency, l.per_second, l.burst, l.ordered, l.on_failure"


def governing(key: str, columns: str = _LIMIT_COLUMNS) -> str:
    """A subquery selecting the limit that governs the key expression ``key``: the exact
    pattern first, then the longest glob. No row: the key runs unlimited."""
    return f"""
        SELECT {columns}
        FROM pq_limits l
        WHERE {key} LIKE l.like_pattern ESCAPE '\\'
        ORDER BY l.pattern = {key} DESC, length(l.pattern) DESC, l.pattern
        LIMIT 1
    """


def is_governed(key: str) -> str:
    """A condition: some limit names the key expression ``key``."""
    return f"""({key} IS NOT NULL AND EXISTS (
        SELECT 1 FROM pq_limits l WHERE {key} LIKE l.like_pattern ESCAPE '\\'))"""


SYNC_LIMITS = """
    WITH given AS (
        SELECT * FROM unnest(%(pattern)s::text[], %(concurrency)s::integer[], %(rate)s::text[],
            %(per_second)s::float8[], %(burst)s::float8[], %(ordered)s::boolean[],
            %(on_failure)s::text[])
        AS g(pattern, concurrency, rate, per_second, burst, ordered, on_failure)
    ),
    dropped AS (
        DELETE FROM pq_limits l WHERE l.source = 'setting'
          AND NOT EXISTS (SELECT 1 FROM given g WHERE g.pattern = l.pattern)
        RETURNING l.pattern
    ),
    written AS (
        INSERT INTO pq_limits AS l (pattern, concurrency, rate, per_second, burst, ordered,
                                    on_failure, source, updated_at)
        SELECT g.*, 'setting', now() FROM given g
        ON CONFLICT (pattern) DO UPDATE SET concurrency = EXCLUDED.concurrency,
            rate = EXCLUDED.rate,
            per_second = EXCLUDED.per_second, burst = EXCLUDED.burst,
            ordered = EXCLUDED.ordered, on_failure = EXCLUDED.on_failure,
            source = 'setting', updated_at = now()
        WHERE (l.concurrency, l.rate, l.per_second, l.burst, l.ordered, l.on_failure, l.source)
              IS DISTINCT FROM (EXCLUDED.concurrency, EXCLUDED.rate,
               EXCLUDED.per_second, EXCLUDED.burst, EXCLUDED.ordered, EXCLUDED.on_failure,
               'setting')
        RETURNING l.pattern
    )
    SELECT (SELECT count(*) FROM written), (SELECT count(*) FROM dropped)
"""
"""Make the ``source='setting'`` rows of ``pq_limits`` what ``PQ_LIMITS`` says: changed
rows rewritten, patterns no longer in the setting deleted. Rows staff added in the admin
(``source='admin'``) stay, unless the setting names the same pattern: the setting wins."""

_WAKE = f"""
    SELECT pg_notify(%(channel)s, {task_ready_sql("now()", "queue")})
    FROM (SELECT DISTINCT queue FROM pq_tasks
          WHERE status = 'pending' AND limit_key = ANY(%(keys)s)) AS waiting
"""

_SET_PAUSED = """
    INSERT INTO pq_flow_keys AS f (key, is_paused, paused_at, released_at, blocked_until)
    SELECT key, %(paused)s, CASE WHEN %(paused)s THEN now() END,
        CASE WHEN %(release)s THEN now() END, NULL
    FROM unnest(%(keys)s::text[]) AS key
    ON CONFLICT (key) DO UPDATE SET is_paused = EXCLUDED.is_paused,
        paused_at = EXCLUDED.paused_at, blocked_until = NULL, version = f.version + 1,
        released_at = coalesce(EXCLUDED.released_at, f.released_at),
        is_held = f.is_held AND EXCLUDED.released_at IS NULL
    RETURNING f.key
"""


def set_paused(
    using: str, keys: Sequence[str], *, paused: bool, release: bool, channel: str
) -> list[str]:
    """Pause or resume ``keys`` (creating their rows); ``release`` also lets an ordered key
    held by a failure go on. Workers are woken for the keys' waiting tasks on resume."""
    params: dict[str, Any] = {
        "keys": list(keys),
        "paused": paused,
        "release": release,
        "channel": channel,
    }
    with connections[using].cursor() as cursor:
        cursor.execute(_SET_PAUSED, params)
        changed = [row[0] for row in cursor.fetchall()]
        if not paused:
            cursor.execute(_WAKE, params)
    return changed


def sync_limits(using: str, limits: Sequence[FlowLimit]) -> tuple[int, int]:
    """Write ``limits`` as the setting's rows of ``pq_limits``; (written, deleted)."""
    columns = ("pattern", "concurrency", "rate", "per_second", "burst")
    params: dict[str, Any] = {
        column: [getattr(limit, column) for limit in limits] for column in columns
    }
    params["ordered"] = [limit.ordered for limit in limits]
    params["on_failure"] = [limit.on_failure for limit in limits]
    with connections[using].cursor() as cursor:
        cursor.execute(SYNC_LIMITS, params)
        written, deleted = cursor.fetchone()
    return int(written), int(deleted)


def _key_numbers(keys: str) -> str:
    """The numbers of the keys the subquery ``keys`` selects (column ``key``)."""
    return f"""
    SELECT s.key, g.concurrency, g.rate, coalesce(g.ordered, false) AS ordered,
        coalesce(k.is_paused, false) AS is_paused, coalesce(k.is_held, false) AS is_held,
        (SELECT count(*) FROM pq_tasks t
         WHERE t.limit_key = s.key AND t.status = 'running') AS running,
        (SELECT count(*) FROM pq_tasks t
         WHERE t.limit_key = s.key AND t.status = 'pending') AS waiting,
        CASE WHEN g.per_second IS NULL THEN NULL ELSE g.burst - least(g.burst, greatest(0,
            coalesce(k.tokens + g.per_second * extract(epoch FROM now() - k.tokens_at),
                     g.burst))) END AS rate_spent,
        g.pattern AS "limit"
    FROM ({keys}) AS s(key)
    LEFT JOIN pq_flow_keys k ON k.key = s.key
    LEFT JOIN LATERAL ({governing("s.key", "l.pattern, l.rate, " + _LIMIT_COLUMNS)}) g ON true
    """


KEY_NUMBERS = _key_numbers("SELECT DISTINCT unnest(%(keys)s::text[])")
"""Per key of ``%(keys)s``: its limit (concurrency, rate, ordered), whether it is paused
or held, tasks running and waiting, rate tokens spent of the burst, and the pattern that
governs it (NULL: unlimited)."""

BUSY_KEYS = (
    _key_numbers(
        """SELECT limit_key FROM pq_tasks WHERE limit_key IS NOT NULL AND status = 'running'
           UNION SELECT limit_key FROM pq_tasks WHERE limit_key IS NOT NULL
                                                  AND status = 'pending'
           UNION SELECT key FROM pq_flow_keys WHERE is_paused OR is_held"""
    )
    + " ORDER BY 8 DESC, 1 LIMIT %(limit)s"
)
"""The same numbers for the keys with tasks waiting or running, paused or held: most
waiting first, up to ``%(limit)s``. (Reads the keyed pending rows' index: for a status
command or a scrape, not for a claim.)"""
