"""Filling ``pq_tasks`` with many realistic rows fast, for the scale tests and the benchmark.

One ``INSERT ... SELECT generate_series`` writes the rows server-side; the mix is a busy
queue's: mostly completed, some failed and cancelled, a few pending (ready and future),
running and blocked, over several task names and queues, with finished rows spread over
the last day.
"""

from __future__ import annotations

from typing import Any

FILL = """
    INSERT INTO pq_tasks (
        queue, name, payload, priority, status, run_at, created_at, started_at, finished_at,
        attempts, max_attempts, is_cancel_requested, error, error_code, run_token, worker_id
    )
    SELECT
        (ARRAY['default', 'mail', 'reports', 'images'])[1 + i %% 4],
        'tests.testapp.tasks:' || (ARRAY['add', 'echo', 'noop', 'log_run', 'sleep'])[1 + i %% 5],
        jsonb_build_object('args', jsonb_build_array(i, i + 1), 'kwargs', '{}'::jsonb),
        (ARRAY[0, 25, 50, 50, 75, 100])[1 + i %% 6],
        s.status,
        CASE WHEN s.status = 'pending' AND i %% 2 = 0 THEN now() + interval '1 hour'
             ELSE now() - (%(rows)s - i) * interval '80 milliseconds' END,
        now() - (%(rows)s - i) * interval '80 milliseconds',
        CASE WHEN s.status <> 'pending'
             THEN now() - (%(rows)s - i) * interval '80 milliseconds' END,
        CASE WHEN s.status IN ('completed', 'failed', 'cancelled')
             THEN now() - (%(rows)s - i) * interval '80 milliseconds' + interval '50 milliseconds'
        END,
        CASE WHEN s.status = 'pending' THEN 0 ELSE 1 END,
        1,
        false,
        CASE WHEN s.status = 'failed'
             THEN E'Traceback (most recent call last):\\nValueError: failure ' || (i %% 7)::text
             ELSE '' END,
        CASE s.status WHEN 'failed' THEN 'exception' WHEN 'cancelled' THEN 'cancelled' ELSE '' END,
        CASE WHEN s.status = 'running' THEN gen_random_uuid() END,
        CASE WHEN s.status IN ('running', 'completed', 'failed') THEN gen_random_uuid() END
    FROM generate_series(1, %(rows)s) AS i
    CROSS JOIN LATERAL (
        SELECT CASE
            -- The unfinished rows are the newest ones, as in a live queue.
            WHEN i > %(rows)s - %(rows)s / 50
                -- pending both ready and future (every other row is future), running, blocked
                THEN (ARRAY['pending', 'running', 'blocked', 'pending', 'pending', 'running'])
                     [1 + i %% 6]
            WHEN i %% 100 < 3 THEN 'failed'
            WHEN i %% 100 < 5 THEN 'cancelled'
            ELSE 'completed'
        END AS status
    ) AS s
"""


def fill_tasks(cursor: Any, rows: int) -> None:
    """Insert ``rows`` tasks and refresh the planner's statistics for them."""
    cursor.execute(FILL, {"rows": rows})
    cursor.execute("ANALYZE pq_tasks")
