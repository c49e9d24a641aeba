"""Batches' figures (docs/how-to/dependencies.md), measured with real workers.

    python benchmarks/batches.py [--tasks 10000] [--rounds 3] [--output benchmarks/batches.json]

Per round, taking turns: ``--tasks`` plain no-op tasks drained by one worker at
concurrency 2, then a batch of as many no-op members with an ``on_success`` callback
drained the same way. Drain time runs from the first member's start to the last member's
end (by the rows' ``started_at``/``finished_at``); the callback's delay is from the last
member's end (the row's ``finished_at``) to the moment the callback's code runs (it writes
``time.time()``). Reported: the medians, their ratio, every round.
Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from flow import URL, _django, _stop, _workers, fresh_database


def _wait_for(connection: Any, where: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM pq_tasks WHERE {where}")
            if cursor.fetchone()[0] == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"still tasks where {where}")


def _one(connection: Any, url: str, tasks: int, as_batch: bool) -> dict[str, float]:
    from projects.djpq.tasks import noop, record_start

    import django_pq as pq

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE pq_tasks, pq_dependencies, pq_batches")
    members = [pq.prepare(noop, queue="bench") for _ in range(tasks)]
    callback = None
    handle, started = tempfile.mkstemp(prefix="pq-batch-")
    os.close(handle)
    if as_batch:
        # The callback writes its own start time: the moment its code runs in the child.
        on_success = pq.prepare(record_start, started, 0, queue="bench")
        callback = pq.batch(members, on_success=on_success).on_success
    else:
        pq.enqueue_many(members)
    workers = _workers(url, 1, 2, None)
    try:
        _wait_for(connection, "status <> 'completed'")
    finally:
        _stop(workers)
    callback_id = callback.pk if callback is not None else 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM max(finished_at) - min(started_at)), max(finished_at) "
            "FROM pq_tasks WHERE id <> %s",
            [callback_id],
        )
        drain, last_end = cursor.fetchone()
        result = {"per_second": tasks / float(drain)}
    if callback is not None:
        with open(started) as written:
            began = float(written.read().split()[1])
        result["callback_delay_ms"] = (began - last_end.timestamp()) * 1000
    os.unlink(started)
    return result


def measure(tasks: int, rounds: int) -> dict[str, Any]:
    url = fresh_database("bench_batches")
    connection = _django(url)
    plain, batched = [], []
    for _ in range(rounds):
        plain.append(_one(connection, URL.format(name="bench_batches"), tasks, False))
        batched.append(_one(connection, URL.format(name="bench_batches"), tasks, True))
    plain_median = statistics.median(r["per_second"] for r in plain)
    batch_median = statistics.median(r["per_second"] for r in batched)
    return {
        "tasks": tasks,
        "rounds": rounds,
        "plain_per_second": [r["per_second"] for r in plain],
        "batch_per_second": [r["per_second"] for r in batched],
        "ratio_of_medians": batch_median / plain_median,
        "callback_delay_ms": [r["callback_delay_ms"] for r in batched],
        "callback_delay_ms_p50": statistics.median(r["callback_delay_ms"] for r in batched),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    text = json.dumps(measure(args.tasks, args.rounds), indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
