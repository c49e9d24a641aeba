"""The worker's statements: claim, finish, heartbeat, reap, orphans, prune. Each is one
statement, run on the worker's own connection under the name ``faults.STATEMENTS`` gives it.

Every write to a claimed row is fenced by its ``run_token``: a worker that stalled past
its lease and wakes up finds its token gone and its late write matches no row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from django_pq.conf import LONGEST_LEASE
from django_pq.models import ErrorCode
from django_pq.notify import column_arrays, notifying


class ClaimScope(Protocol):
    """Which tasks a claimer may take: a worker's ``--queue``/``--priority`` options
    (``WorkerConfig``), or the testing helpers' ``ClaimFilter``."""

    @property
    def queues(self) -> Sequence[str]: ...
    @property
    def priorities(self) -> Sequence[int]: ...
    @property
    def min_priority(self) -> int | None: ...


@dataclass(frozen=True)
class ClaimFilter:
    """A :class:`ClaimScope` of plain values (the testing helpers' claims)."""

    queues: Sequence[str] = ()
    priorities: Sequence[int] = ()
    min_priority: int | None = None


#: Failures a task with attempts left is retried after. The others would fail again.
RETRYABLE = [
    ErrorCode.EXCEPTION,
    ErrorCode.TIMEOUT,
    ErrorCode.SIGNAL,
    ErrorCode.MEMORY,
    ErrorCode.WORKER_LOST,
    ErrorCode.SHUTDOWN,
]


@dataclass(frozen=True)
class Claimed:
    """A task this worker now holds."""

    id: int
    name: str
    payload: Any  # JSON text from the claim (decoded in the child), or decoded JSON
    queue: str
    priority: int
    attempts: int
    max_attempts: int
    max_runtime: float | None
    run_token: str
    client_id: str | None
    periodic_id: int | None


_CLAIMED_COLUMNS = (
    # The payload as text: decoding hostile JSON (say, nested thousands deep) is the
    # child's job, so it can fail that task alone and never the worker.
    "t.id, t.name, t.payload::text, t.queue, t.priority, t.attempts, t.max_attempts, "
    "t.max_runtime, t.run_token::text, t.client_id, t.periodic_id"
)


def _claim_filters(config: ClaimScope) -> list[str]:
    filters = []
    if config.queues:
        filters.append("queue = ANY(%(queues)s)")
    if config.priorities:
        filters.append("priority = ANY(%(priorities)s)")
    if config.min_priority is not None:
        filters.append("priority >= %(min_priority)s")
    return filters


def claim_statement(config: ClaimScope, *, include_scheduled: bool = False) -> str:
    """Claim up to ``%(limit)s`` ready tasks for ``%(worker)s``, best first.

    ``FOR UPDATE SKIP LOCKED`` lets any number of workers claim at once without waiting on
    each other or taking the same row; the CTE is materialized so the lock-and-limit runs
    exactly once. Worker, token, attempt and ``started_at`` come from the database.
    ``include_scheduled`` also takes tasks whose ``run_at`` is still ahead (the testing
    helpers, inside a test transaction where ``now()`` stands still).
    """
    due = [] if include_scheduled else ["run_at <= now()"]
    filters = ["status = 'pending'", *due, *_claim_filters(config)]
    return f"""
        WITH claimable AS MATERIALIZED (
            SELECT id FROM pq_tasks
            WHERE {" AND ".join(filters)}
            ORDER BY priority DESC, run_at, id
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        )
        UPDATE pq_tasks t SET
            status = 'running', worker_id = %(worker)s, run_token = gen_random_uuid(),
            -- Capped so a hand-written attempts of 2^31-1 cannot fail the whole claim.
            attempts = least(t.attempts, 2147483646) + 1, started_at = now(), finished_at = NULL,
            is_cancel_requested = false
        FROM claimable WHERE t.id = claimable.id
        RETURNING {_CLAIMED_COLUMNS}
    """


def claim_params(config: ClaimScope, worker_id: str, limit: int) -> dict[str, Any]:
    return {
        "limit": limit,
        "worker": worker_id,
        "queues": list(config.queues),
        "priorities": list(config.priorities),
        "min_priority": config.min_priority,
    }


@dataclass(frozen=True)
class Outcome:
    """How one run ended, as the parent records it."""

    task_id: int
    run_token: str
    status: str  # "completed" | "failed" | "cancelled"
    error_code: str = ""
    error: str = ""
    result: str | None = None  # JSON text
    peak_rss: int | None = None
    cpu_seconds: float | None = None
    retry_delay: float = 0.0


# How a run ends, decided per row under its lock: a version parked by upsert() replaces
# it; a retryable failure with attempts left goes back to pending after its delay;
# anything else is final.
_FINISH = """
    WITH outcome AS (
        SELECT * FROM unnest(
            %s::bigint[], %s::uuid[], %s::text[], %s::text[], %s::text[], %s::jsonb[],
            %s::bigint[], %s::double precision[], %s::double precision[]
        ) AS o(id, run_token, status, error_code, error, result, peak_rss, cpu_seconds,
               retry_delay)
    ),
    decided AS (
        SELECT o.*, t.requeue,
            CASE
                WHEN t.requeue IS NOT NULL THEN 'parked'
                WHEN o.status = 'failed' AND o.error_code = ANY(%s)
                     AND t.attempts < t.max_attempts THEN 'retry'
                ELSE 'final'
            END AS fate
        FROM outcome o JOIN pq_tasks t
            ON t.id = o.id AND t.run_token = o.run_token AND t.status = 'running'
        FOR UPDATE OF t
    )
    UPDATE pq_tasks t SET
        status = CASE d.fate WHEN 'final' THEN d.status ELSE 'pending' END,
        finished_at = CASE d.fate WHEN 'final' THEN now() END,
        run_at = CASE d.fate
            WHEN 'retry' THEN now() + make_interval(secs => d.retry_delay)
            WHEN 'parked' THEN COALESCE((d.requeue->>'run_at')::timestamptz, now())
            ELSE t.run_at END,
        name = CASE d.fate WHEN 'parked' THEN d.requeue->>'name' ELSE t.name END,
        payload = CASE d.fate WHEN 'parked' THEN d.requeue->'payload' ELSE t.payload END,
        queue = CASE d.fate WHEN 'parked' THEN d.requeue->>'queue' ELSE t.queue END,
        priority = CASE d.fate WHEN 'parked' THEN (d.requeue->>'priority')::smallint
            ELSE t.priority END,
        max_attempts = CASE d.fate WHEN 'parked' THEN (d.requeue->>'max_attempts')::integer
            ELSE t.max_attempts END,
        max_runtime = CASE d.fate WHEN 'parked' THEN (d.requeue->>'max_runtime')::float8
            ELSE t.max_runtime END,
        attempts = CASE d.fate WHEN 'parked' THEN 0 ELSE t.attempts END,
        result = CASE d.fate WHEN 'final' THEN d.result END,
        error = CASE d.fate WHEN 'parked' THEN '' ELSE d.error END,
        error_code = CASE d.fate WHEN 'parked' THEN '' ELSE d.error_code END,
        run_token = CASE d.fate WHEN 'final' THEN t.run_token END,
        requeue = NULL,
        is_cancel_requested = false,
        peak_rss = d.peak_rss,
        cpu_seconds = d.cpu_seconds
    FROM decided d WHERE t.id = d.id
"""

FINISH_STATEMENT = notifying(_FINISH, "t.id, t.status, t.run_at, t.queue")
"""Record finished runs (:func:`finish_params`), each only if its row is still ``running``
under the run token it was claimed with, and announce the rows that are ready again."""


def finish_params(outcomes: list[Outcome], channel: str) -> list[Any]:
    columns = (
        "task_id",
        "run_token",
        "status",
        "error_code",
        "error",
        "result",
        "peak_rss",
        "cpu_seconds",
        "retry_delay",
    )
    return [*column_arrays(outcomes, columns), [str(code) for code in RETRYABLE], channel]


DISCARD_REQUEUE = """
    UPDATE pq_tasks SET requeue = NULL
    WHERE id = %s AND run_token = %s::uuid AND status = 'running'
"""
"""Drop the version parked on a running row (``%s`` id, ``%s`` run token) before its
fallback verdict is written, when applying it failed; fenced by the run token."""

REGISTER = """
    INSERT INTO pq_workers (id, hostname, pid, queues, priorities, min_priority, concurrency,
                            started_at, heartbeat_at, lease_expires_at, version)
    VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)s, %(priorities)s, %(min_priority)s,
            %(concurrency)s, now(), now(), now() + make_interval(secs => %(lease)s), %(version)s)
    ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), stopped_at = NULL,
        lease_expires_at = now() + make_interval(secs => %(lease)s)
"""
"""Insert this worker's ``pq_workers`` row, or revive it after a lost connection: its
lease starts now by the database clock."""


def heartbeat_statement(config: ClaimScope) -> str:
    """Renew the lease, and learn in the same transaction what the worker should do next.

    The lease is renewed only while it still holds: a worker whose lease lapsed has been
    (or is about to be) reaped, and must not pretend otherwise. The row also carries this
    worker's tasks that someone asked to cancel; up to 500 running tasks of dead workers
    (lease lapsed, stopped, never registered, or leased further ahead than any worker
    may, ``LONGEST_LEASE``: decided by the database clock, so a skewed worker clock
    cannot reap early); the seconds until the next due schedule (0 if one is overdue);
    whether a task this worker could claim is ready now; the seconds until the earliest
    task it could claim that is not ready yet; and the database's clock. Each "seconds
    until" is NULL when there is no such row: a heartbeat that found nothing must not look
    like one that found something due.

    Total over any timestamp a row may hold: ``run_at``/``next_run`` of ``infinity`` or
    ``-infinity`` (which would make ``min(...) - now()`` overflow) are clamped to within a
    day from now; the next heartbeat asks again anyway.
    """
    claimable = " AND ".join(["status = 'pending'", *_claim_filters(config)])
    next_schedule = _seconds_until("SELECT min(next_run) FROM pq_periodic WHERE active")
    next_task = _seconds_until(
        f"SELECT min(run_at) FROM pq_tasks WHERE {claimable} AND run_at > now()"
    )
    return f"""
        WITH renewed AS (
            UPDATE pq_workers SET heartbeat_at = now(),
                lease_expires_at = now() + make_interval(secs => %(lease)s)
            WHERE id = %(id)s AND lease_expires_at > now() AND stopped_at IS NULL
            RETURNING id
        )
        SELECT EXISTS (SELECT 1 FROM renewed),
            ARRAY(SELECT ARRAY[id::text, run_token::text] FROM pq_tasks
                  WHERE worker_id = %(id)s AND status = 'running' AND is_cancel_requested),
            ARRAY(SELECT ARRAY[t.id::text, t.run_token::text] FROM pq_tasks t
                  LEFT JOIN pq_workers w ON w.id = t.worker_id
                  WHERE t.status = 'running'
                    AND (w.id IS NULL OR w.stopped_at IS NOT NULL OR w.lease_expires_at < now()
                         OR w.lease_expires_at > now() + interval '{LONGEST_LEASE:.0f} seconds')
                  ORDER BY t.id LIMIT 500),
            {next_schedule},
            EXISTS (SELECT 1 FROM pq_tasks WHERE {claimable} AND run_at <= now()),
            {next_task},
            extract(epoch FROM clock_timestamp())
    """


def _seconds_until(moment_query: str) -> str:
    """Seconds from now to the moment ``moment_query`` selects, clamped to [0, 1 day] (never
    out of range, whatever the row holds); NULL when it selects none. (``greatest`` and
    ``least`` skip a NULL, so the guard must come first.)"""
    return f"""(SELECT extract(epoch FROM
                   least(greatest(moment, now()), now() + interval '1 day') - now())
               FROM ({moment_query}) AS next(moment) WHERE moment IS NOT NULL)"""


CANCEL_REQUESTED = """
    SELECT t.id, t.run_token::text
    FROM pq_tasks t JOIN unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS m(id, run_token)
        ON t.id = m.id AND t.run_token = m.run_token
    WHERE t.worker_id = %(worker)s AND t.status = 'running' AND t.is_cancel_requested
"""
"""Of the running tasks a cancel notification named (``%(ids)s`` with their run tokens
``%(tokens)s``, held by ``%(worker)s``), those whose rows really ask to be cancelled: a
notification is a hint, this is the authority."""

ORPHANS = """
    SELECT id, run_token::text FROM pq_tasks
    WHERE worker_id = %(worker)s AND status = 'running' AND NOT (id = ANY(%(mine)s))
"""
"""Tasks held under this worker's id that it neither runs nor has an outcome for
(``%(mine)s``): a claim that committed while the connection died before its reply
arrived. Reaped like a dead worker's."""

DEREGISTER = "UPDATE pq_workers SET stopped_at = now() WHERE id = %(id)s"
"""Mark this worker stopped: the next heartbeat of any worker reaps what it still held."""

PRUNE_TASKS = """
    DELETE FROM pq_tasks WHERE id IN (
        SELECT id FROM pq_tasks
        WHERE status IN ('completed', 'failed', 'cancelled')
          AND finished_at < now() - make_interval(secs => %(retention)s)
        LIMIT %(batch)s
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id
"""
"""Delete one batch (``%(batch)s``) of tasks finished more than ``%(retention)s`` seconds
ago; rows another transaction holds are skipped, so no long locks and no waiting."""

PRUNE_WORKERS = """
    DELETE FROM pq_workers w
    WHERE w.lease_expires_at < now() - interval '1 day'
      AND NOT EXISTS (SELECT 1 FROM pq_tasks t WHERE t.worker_id = w.id AND t.status = 'running')
"""
"""Delete worker rows whose lease lapsed over a day ago and that hold no running task (a
task's ``worker_id`` keeps pointing at its row until the reaper has finished it)."""
