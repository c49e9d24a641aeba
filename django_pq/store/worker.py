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
from django_pq.notify import column_arrays, finished_channel, notifying
from django_pq.retry_policy import WAYS_OF_DYING
from django_pq.store import flow


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
    ErrorCode.SOFT_TIMEOUT,
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
    slot: float | None = None  # the schedule slot, seconds since the epoch
    soft_runtime: float | None = None
    #: The run's time limit in seconds, as the parent enforces it (the row's own or the
    #: worker's); filled in by the parent before the task reaches its child.
    runtime_limit: float | None = None


_CLAIMED_COLUMNS = (
    # The payload as text: decoding hostile JSON (say, nested thousands deep) is the
    # child's job, so it can fail that task alone and never the worker.
    "t.id, t.name, t.payload::text, t.queue, t.priority, t.attempts, t.max_attempts, "
    "t.max_runtime, t.run_token::text, t.client_id, t.periodic_id, "
    "extract(epoch FROM t.slot)::float8, t.soft_runtime"
)
#: The claimed columns of the flow-hints row: none, typed like the columns they stand for.
_NO_TASK = (
    "NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::smallint, NULL::integer, "
    "NULL::integer, NULL::float8, NULL::text, NULL::text, NULL::bigint, NULL::float8, "
    "NULL::float8"
)


def _claimed_from(chosen: str) -> str:
    """The claim's last CTE, starting the ids of CTE ``chosen``, then its reply: the claimed
    rows, and (the statement's next line) one row of flow hints after them."""
    return f"""claimed AS (
            UPDATE pq_tasks t SET
                status = 'running', worker_id = %(worker)s, run_token = gen_random_uuid(),
                -- Capped so a hand-written attempts of 2^31-1 cannot fail the whole claim.
                attempts = least(t.attempts, 2147483646) + 1, started_at = now(),
                finished_at = NULL, is_cancel_requested = false, progress = NULL
            FROM {chosen} WHERE t.id = {chosen}.id
            RETURNING {_CLAIMED_COLUMNS}
        )
        SELECT *, NULL::bigint, NULL::float8, NULL::boolean FROM claimed
        UNION ALL"""


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
    """Claim up to ``%(limit)s`` ready tasks for ``%(worker)s``, best first, within the
    flow limits of their keys.

    ``FOR UPDATE SKIP LOCKED`` lets any number of workers claim at once without waiting on
    each other or taking the same row; each CTE is materialized so it runs exactly once.
    Worker, token, attempt and ``started_at`` come from the database. Best first is by
    priority, then fair turn (``fair_rank``: round-robin across fair keys), then ``run_at``.
    ``include_scheduled`` also takes tasks whose ``run_at`` is still ahead (the testing
    helpers, inside a test transaction where ``now()`` stands still).

    Flow limits, race-free across workers: keys already at their concurrency, paused, or
    told to wait (``blocked_until``: out of rate tokens, an ordered key whose next task is
    not due) are left out of the scan. For the keys a limit governs among the candidates,
    the claim locks each key's ``pq_flow_keys`` row (``SKIP LOCKED``: a key another claim is
    deciding waits for the next round) and counts its running tasks. That count comes from
    this statement's snapshot, which may predate a claim that committed meanwhile; such a
    claim bumped ``version``, so a locked row whose version differs from the snapshot's is
    left for the next round. Finishes never touch the key rows: a count that misses one
    only errs on the safe side, and a reaped task frees its slot by no longer running.

    Returns the claimed rows (:func:`claimed_rows`) and one last row of flow hints: how
    many candidates limits held back, and the seconds until the earliest held key may go.
    """
    due = [] if include_scheduled else ["run_at <= now()"]
    filters = ["status = 'pending'", *due, *_claim_filters(config)]
    return f"""
        -- The flow's clock is this statement's own, not its transaction start: a claim
        -- after a finish in one transaction spends the tokens due by now.
        WITH clock AS MATERIALIZED (SELECT clock_timestamp() AS at),
        held_back AS MATERIALIZED (
            SELECT key FROM pq_flow_keys WHERE is_paused
            UNION
            SELECT key FROM pq_flow_keys WHERE blocked_until > (SELECT at FROM clock)
            UNION
            SELECT r.limit_key FROM (
                SELECT limit_key, count(*) AS running FROM pq_tasks
                WHERE status = 'running' AND limit_key IS NOT NULL GROUP BY limit_key
            ) r CROSS JOIN LATERAL ({flow.governing("r.limit_key")}) g
            WHERE r.running >= g.concurrency
        ),
        candidates AS MATERIALIZED (
            SELECT id, limit_key, priority, fair_rank, run_at FROM pq_tasks
            WHERE {" AND ".join(filters)}
              AND (limit_key IS NULL
                   OR NOT (limit_key = ANY(ARRAY(SELECT key FROM held_back))))
            ORDER BY priority DESC, fair_rank, run_at, id
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        ),
        governed AS MATERIALIZED (
            SELECT k.key, g.* FROM (
                SELECT DISTINCT limit_key AS key FROM candidates WHERE limit_key IS NOT NULL
            ) k CROSS JOIN LATERAL ({flow.governing("k.key")}) g
        ),
        -- A governed key's first claim creates its row (seen by the next round). In key
        -- order: two claims creating the same new keys wait for each other in one order.
        created AS (
            INSERT INTO pq_flow_keys (key) SELECT key FROM governed ORDER BY key
            ON CONFLICT (key) DO NOTHING RETURNING key
        ),
        locked AS MATERIALIZED (
            SELECT f.key, f.version, f.tokens, f.tokens_at, f.released_at FROM pq_flow_keys f
            WHERE f.key IN (SELECT key FROM governed) AND NOT f.is_paused
            FOR UPDATE SKIP LOCKED
        ),
        room AS MATERIALIZED (
            SELECT g.key, g.concurrency, g.per_second, g.ordered, n.*
            FROM governed g JOIN locked f ON f.key = g.key
            CROSS JOIN LATERAL (SELECT
                CASE WHEN g.per_second IS NOT NULL THEN least(g.burst, greatest(0, coalesce(
                    f.tokens + g.per_second
                        * extract(epoch FROM (SELECT at FROM clock) - f.tokens_at),
                    g.burst)))
                END AS tokens,
                (SELECT count(*) FROM pq_tasks r
                 WHERE r.limit_key = g.key AND r.status = 'running') AS running,
                CASE WHEN g.ordered THEN (SELECT h.id FROM pq_tasks h
                     WHERE h.limit_key = g.key AND h.status = 'pending' ORDER BY h.id LIMIT 1)
                END AS head,
                g.ordered AND g.on_failure = 'hold' AND EXISTS (SELECT 1 FROM pq_tasks x
                    WHERE x.limit_key = g.key AND x.status = 'failed'
                      AND x.finished_at > coalesce(f.released_at, '-infinity')) AS held
            ) n
            WHERE f.version = (SELECT s.version FROM pq_flow_keys s WHERE s.key = g.key)
        ),
        ranked AS MATERIALIZED (
            SELECT c.*, row_number() OVER (
                PARTITION BY c.limit_key ORDER BY c.priority DESC, c.fair_rank, c.run_at, c.id
            ) AS turn
            FROM candidates c
        ),
        chosen AS MATERIALIZED (
            SELECT r.id, r.limit_key FROM ranked r
            LEFT JOIN governed g ON g.key = r.limit_key
            LEFT JOIN room k ON k.key = r.limit_key
            WHERE g.key IS NULL  -- no key, or a key no limit names: unlimited
               -- A sequence starts its head only, whatever else ranks before it.
               OR (k.ordered AND NOT k.held AND r.id = k.head AND k.running = 0
                   AND coalesce(k.tokens, 1) >= 1)
               OR (NOT k.ordered AND r.turn <= least(coalesce(k.concurrency - k.running, r.turn),
                                                     coalesce(floor(k.tokens), r.turn)))
        ),
        spent AS (
            UPDATE pq_flow_keys f SET version = f.version + 1, is_held = k.held,
                tokens = k.tokens - coalesce(c.taken, 0),
                tokens_at = CASE WHEN k.tokens IS NOT NULL THEN (SELECT at FROM clock) END,
                -- The next round leaves the key out until then: a rate's next token; a
                -- held or waiting sequence is looked at again within seconds.
                blocked_until = CASE
                    WHEN k.held THEN (SELECT at FROM clock) + interval '5 seconds'
                    WHEN k.tokens IS NOT NULL AND k.tokens - coalesce(c.taken, 0) < 1
                        THEN (SELECT at FROM clock) + make_interval(secs => least(
                            (1 - (k.tokens - coalesce(c.taken, 0))) / k.per_second, 86400))
                    WHEN k.ordered AND c.taken IS NULL THEN least(
                        (SELECT at FROM clock) + interval '5 seconds',
                        greatest((SELECT h.run_at FROM pq_tasks h WHERE h.id = k.head),
                                 (SELECT at FROM clock) + interval '10 milliseconds'))
                END
            FROM room k LEFT JOIN (
                SELECT limit_key, count(*) AS taken FROM chosen GROUP BY limit_key
            ) c ON c.limit_key = k.key
            WHERE f.key = k.key
            RETURNING f.key, f.blocked_until, f.is_held
        ),
        {_claimed_from("chosen")}
        SELECT {_NO_TASK},
            -- Candidates left for a later round; a held sequence's are not "later".
            (SELECT count(*) FROM candidates c WHERE NOT EXISTS (
                 SELECT 1 FROM chosen WHERE chosen.id = c.id)
               AND NOT EXISTS (SELECT 1 FROM spent WHERE spent.key = c.limit_key
                               AND spent.is_held)),
            -- Against the clock the claim held keys back by: a moment this statement
            -- outlived is due now (a wait of zero or less), not gone.
            (SELECT extract(epoch FROM min(moment) - clock_timestamp()) FROM (
                SELECT key, blocked_until FROM spent WHERE NOT is_held
                UNION ALL
                SELECT key, blocked_until FROM pq_flow_keys
                WHERE blocked_until > (SELECT at FROM clock)
                  AND NOT is_paused AND NOT is_held AND NOT (key IN (SELECT key FROM spent))
            ) AS hints(key, moment) WHERE moment IS NOT NULL AND EXISTS (
                SELECT 1 FROM pq_tasks w WHERE w.limit_key = hints.key AND w.status = 'pending'
                  AND NOT (w.id IN (SELECT id FROM chosen)))),
            {FLOW_IN_USE}
    """


FLOW_IN_USE = """(EXISTS (SELECT 1 FROM pq_limits)
                  OR EXISTS (SELECT 1 FROM pq_flow_keys WHERE is_paused))"""
"""A condition: flow control has anything to enforce (a limit exists, or a key is
paused). While not, the plain claim (:func:`plain_claim_statement`) serves, at its lower
cost; both claims report it."""


def plain_claim_statement(config: ClaimScope) -> str:
    """The claim while flow control has nothing to enforce: :func:`claim_statement`'s
    order and reply, without its per-key work (planning it costs a fraction).

    Safe whatever the rows say: it takes a task with a ``limit_key`` only while no limit
    exists and no key is paused (decided in its own snapshot; a limit added meanwhile
    applies from the next claim on), and its reply says whether flow control is in use,
    so the worker switches to :func:`claim_statement` for the next round.
    """
    filters = ["status = 'pending'", "run_at <= now()", *_claim_filters(config)]
    return f"""
        WITH in_use AS MATERIALIZED (SELECT {FLOW_IN_USE} AS yes),
        claimable AS MATERIALIZED (
            SELECT id FROM pq_tasks
            WHERE {" AND ".join(filters)}
              AND (limit_key IS NULL OR NOT (SELECT yes FROM in_use))
            ORDER BY priority DESC, fair_rank, run_at, id
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        ),
        {_claimed_from("claimable")}
        SELECT {_NO_TASK}, 0, NULL, (SELECT yes FROM in_use)
    """


#: Claims in a row taken at once because flow limits held candidates back (each round
#: leaves the held keys out of the next); then a claimer waits for a wake-up.
FLOW_ROUNDS = 4


@dataclass(frozen=True)
class FlowHints:
    """What a claim's flow limits held back: ``held_back`` candidates it did not take, and
    ``wait``, the seconds until the earliest held key may start again (None: no such key;
    a key at its concurrency goes again when a task of it ends, which notifies); ``in_use``:
    whether flow control has anything to enforce (:data:`FLOW_IN_USE`)."""

    held_back: int
    wait: float | None
    in_use: bool = True


def claimed_rows(rows: Sequence[Sequence[Any]]) -> tuple[list[Claimed], FlowHints]:
    """A claim's reply (:func:`claim_statement`): the claimed tasks and the flow hints."""
    claimed = [Claimed(*row[:-3]) for row in rows if row[0] is not None]
    hints = [row for row in rows if row[0] is None]
    held_back, wait, in_use = hints[0][-3:] if hints else (0, None, True)
    return claimed, FlowHints(
        int(held_back or 0), None if wait is None else float(wait), bool(in_use)
    )


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
    retry_delay: float = 0.0  # the worker's backoff, for a task without a retry policy
    #: The exception's class and its bases (``module.QualName``, JSON text), when the task
    #: raised: what a policy's ``exceptions``/``ignore`` are matched against.
    exception_types: str | None = None
    retry_in: float | None = None  # pq.RetryLater's delay
    count_attempt: bool = True  # pq.RetryLater(count_attempt=...)


def _number(json_value: str, ceiling: float = 1e9) -> str:
    """A JSON number of a row's policy as ``float8``, clamped to [0, ``ceiling``]; NULL
    when it is missing or not a number. A row may hold any JSON: a hostile or broken
    policy must decide something, never fail the statement that records a run."""
    return (
        f"(CASE WHEN jsonb_typeof({json_value}) = 'number' THEN "
        f"least(greatest(({json_value})::numeric, 0), {ceiling})::float8 END)"
    )


# The rule that decides a failed run, for a row with a retry policy (``p``). The first
# that matches wins; only 'retry' retries. Failures of the same way of dying are counted
# in ``failure_counts``, so ``limits`` hold whatever ``max_attempts`` still allows.
_POLICY_RULE = f"""
    CASE
        WHEN NOT (o.error_code = ANY(%(ways)s)) THEN 'not_retryable'
        WHEN NOT coalesce(jsonb_typeof(p->'on') = 'array' AND p->'on' ? o.error_code, false)
            THEN 'not_on'
        WHEN o.error_code = 'exception' AND coalesce(
            jsonb_typeof(p->'ignore') = 'array' AND p->'ignore' ?| o.types, false)
            THEN 'ignored'
        WHEN o.error_code = 'exception' AND jsonb_typeof(p->'exceptions') = 'array'
             AND NOT coalesce(p->'exceptions' ?| o.types, false) THEN 'not_listed'
        WHEN so_far >= {_number("p->'limits'->o.error_code", 2147483647)} THEN 'limit'
        WHEN t.attempts >= t.max_attempts THEN 'budget'
        ELSE 'retry'
    END
"""

# The n-th retry's delay under a policy: its precomputed table, or exponential backoff,
# capped, then jittered by up to ``jitter`` of itself either way.
_POLICY_DELAY = f"""
    coalesce(
        CASE WHEN jsonb_typeof(p->'delays') = 'array' THEN coalesce(
            {_number("p->'delays'->(least(t.attempts, 100000) - 1)")},
            {_number("p->'delays'->-1")}) END,
        least(
            coalesce({_number("p->'max_delay'")}, 3600),
            coalesce({_number("p->'delay'")}, 1)
                * power(greatest(coalesce({_number("p->'factor'", 100)}, 2), 1),
                        least(greatest(t.attempts - 1, 0), 64))
        )
    ) * (1 + coalesce({_number("p->'jitter'", 1)}, 0) * (2 * random() - 1))
"""

# How a run ends, decided per row under its lock: a version parked by upsert() replaces
# it; a failure its rule retries goes back to pending after its delay; anything else is
# final. Without a policy a retryable failure with attempts left retries after the
# worker's backoff (``retry_delay``); pq.RetryLater's own delay, within the attempts.
_FINISH = f"""
    WITH outcome AS (
        SELECT o.*, ARRAY(SELECT jsonb_array_elements_text(
                   CASE WHEN jsonb_typeof(o.exception_types) = 'array'
                        THEN o.exception_types ELSE '[]' END)) AS types
        FROM unnest(
            %(id)s::bigint[], %(run_token)s::uuid[], %(status)s::text[],
            %(error_code)s::text[], %(error)s::text[], %(result)s::jsonb[],
            %(peak_rss)s::bigint[], %(cpu_seconds)s::double precision[],
            %(retry_delay)s::double precision[], %(exception_types)s::jsonb[],
            %(retry_in)s::double precision[], %(count_attempt)s::boolean[]
        ) AS o(id, run_token, status, error_code, error, result, peak_rss, cpu_seconds,
               retry_delay, exception_types, retry_in, count_attempt)
    ),
    judged AS (
        SELECT o.*, t.requeue, t.attempts, t.max_attempts, so_far,
            CASE
                WHEN o.status <> 'failed' THEN ''
                WHEN o.error_code = 'retry_later' THEN
                    CASE WHEN t.attempts < t.max_attempts OR NOT o.count_attempt
                         THEN 'retry_later' ELSE 'budget' END
                WHEN t.retry_policy IS NULL THEN
                    CASE WHEN NOT (o.error_code = ANY(%(retryable)s)) THEN 'not_retryable'
                         WHEN t.attempts < t.max_attempts THEN 'retry' ELSE 'budget' END
                ELSE {_POLICY_RULE}
            END AS rule,
            CASE
                WHEN o.error_code = 'retry_later' THEN o.retry_in
                WHEN t.retry_policy IS NULL THEN o.retry_delay
                ELSE {_POLICY_DELAY}
            END AS wait
        FROM outcome o
        JOIN pq_tasks t ON t.id = o.id AND t.run_token = o.run_token AND t.status = 'running'
        CROSS JOIN LATERAL (SELECT t.retry_policy AS p) AS policy
        CROSS JOIN LATERAL (SELECT coalesce(
            {_number("t.failure_counts->o.error_code", 2147483647)}, 0)::integer AS so_far
        ) AS counted
        FOR UPDATE OF t
    ),
    decided AS (
        SELECT j.*,
            CASE
                WHEN j.requeue IS NOT NULL THEN 'parked'
                WHEN j.rule IN ('retry', 'retry_later') THEN 'retry'
                ELSE 'final'
            END AS fate,
            CASE WHEN j.rule IN ('retry', 'retry_later') THEN now() + make_interval(
                secs => least(greatest(coalesce(j.wait, 0), 0), 315360000)) END AS next_run,
            CASE WHEN j.error_code = 'retry_later' AND j.rule = 'budget'
                 THEN 'retry_refused' ELSE j.error_code END AS final_code
        FROM judged j
    )
    UPDATE pq_tasks t SET
        status = CASE d.fate WHEN 'final' THEN d.status ELSE 'pending' END,
        finished_at = CASE d.fate WHEN 'final' THEN now() END,
        run_at = CASE d.fate
            WHEN 'retry' THEN d.next_run
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
        soft_runtime = CASE d.fate WHEN 'parked' THEN (d.requeue->>'soft_runtime')::float8
            ELSE t.soft_runtime END,
        keep_result = CASE d.fate WHEN 'parked' THEN (d.requeue->>'keep_result')::float8
            ELSE t.keep_result END,
        retry_policy = CASE d.fate WHEN 'parked' THEN d.requeue->'retry_policy'
            ELSE t.retry_policy END,
        limit_key = CASE d.fate WHEN 'parked' THEN d.requeue->>'limit_key' ELSE t.limit_key END,
        fair_key = CASE d.fate WHEN 'parked' THEN d.requeue->>'fair_key' ELSE t.fair_key END,
        attempts = CASE
            WHEN d.fate = 'parked' THEN 0
            WHEN d.rule = 'retry_later' AND NOT d.count_attempt THEN greatest(t.attempts - 1, 0)
            ELSE t.attempts END,
        failure_counts = CASE
            WHEN d.fate = 'parked' THEN NULL
            WHEN d.status = 'failed' AND d.error_code <> 'retry_later' THEN jsonb_set(
                CASE WHEN jsonb_typeof(t.failure_counts) = 'object'
                     THEN t.failure_counts ELSE '{{}}' END,
                ARRAY[d.error_code], to_jsonb(least(d.so_far, 2147483646) + 1))
            ELSE t.failure_counts END,
        retry_decision = CASE
            WHEN d.fate = 'parked' THEN NULL
            WHEN d.status = 'failed' THEN jsonb_build_object(
                'error_code', d.final_code, 'attempt', d.attempts,
                'max_attempts', d.max_attempts, 'rule', d.rule, 'retry', d.fate = 'retry',
                'next_run', d.next_run, 'decided_at', now())
            ELSE t.retry_decision END,
        -- keep_result = 0: the task's result is not kept.
        result = CASE WHEN d.fate = 'final' AND t.keep_result IS DISTINCT FROM 0
            THEN d.result END,
        error = CASE d.fate WHEN 'parked' THEN '' ELSE d.error END,
        error_code = CASE d.fate WHEN 'parked' THEN '' ELSE d.final_code END,
        run_token = CASE d.fate WHEN 'final' THEN t.run_token END,
        requeue = NULL,
        is_cancel_requested = false,
        peak_rss = d.peak_rss,
        cpu_seconds = d.cpu_seconds
    FROM decided d WHERE t.id = d.id
"""

FINISH_STATEMENT = notifying(
    _FINISH,
    "t.id, t.status, t.run_at, t.queue, t.is_awaited, t.limit_key",
    "%(channel)s",
    finished_channel="%(finished_channel)s",
    frees_a_slot=flow.is_governed("limit_key"),
)
"""Record finished runs (:func:`finish_params`), each only if its row is still ``running``
under the run token it was claimed with, and announce the rows that are ready again, and
the queues of those whose end frees a slot of a limited key."""


_OUTCOME_COLUMNS = {
    "id": "task_id",
    "run_token": "run_token",
    "status": "status",
    "error_code": "error_code",
    "error": "error",
    "result": "result",
    "peak_rss": "peak_rss",
    "cpu_seconds": "cpu_seconds",
    "retry_delay": "retry_delay",
    "exception_types": "exception_types",
    "retry_in": "retry_in",
    "count_attempt": "count_attempt",
}


def finish_params(outcomes: list[Outcome], channel: str) -> dict[str, Any]:
    # By task id: the rows are locked in this order, the order every other writer that
    # locks several tasks uses (a commit's check of its after= dependencies).
    ordered = sorted(outcomes, key=lambda outcome: outcome.task_id)
    arrays = column_arrays(ordered, list(_OUTCOME_COLUMNS.values()))
    return {
        **dict(zip(_OUTCOME_COLUMNS, arrays, strict=True)),
        "retryable": [str(code) for code in RETRYABLE],
        "ways": list(WAYS_OF_DYING),
        "channel": channel,
        "finished_channel": finished_channel(channel),
    }


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
          -- keep_result holds a row past the retention: it goes when its own time is up.
          AND (keep_result IS NULL OR keep_result = 0
               OR finished_at < now() - make_interval(secs => least(keep_result, 315360000)))
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
