"""Flow control's figures (docs/how-to/flow-control.md), measured with real workers.

    python benchmarks/flow.py [--rounds 5] [--output benchmarks/flow.json]

- **cost**: drain of 2,000 no-op tasks at concurrency 2, plain against the same tasks with
  a ``limit_key`` over 50 keys under a limit that never binds (``k:*`` at concurrency
  1,000), the two taking turns round after round (the driver of ``compare.py``);
- **rate**: ``rate="20/s"`` with a backlog of 1,500 tasks and 4 workers for 60 s: starts
  per second by the claim's own ``started_at``, the mean and the most in any second;
- **fairness**: tenant A enqueues 20,000 tasks, then tenant B 10 (``fair_key``), one worker
  at concurrency 2 draining: how many of A's tasks start between B's enqueue and B's last
  start, and how long that takes.

(The claim's plan with 1,000,000 ready rows over 10,000 keys is a test:
``tests/flow/test_limits.py::test_the_claim_stays_index_driven...``.)

Each part uses its own database (dropped and created). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from compare import psql

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DRIVER = HERE / "drivers" / "djpq_driver.py"
URL = "postgresql://postgres@127.0.0.1:5432/{name}"
NEVER_BINDS = {"k:*": {"concurrency": 1000}}


def fresh_database(name: str) -> str:
    admin = URL.format(name="postgres")
    psql(admin, f"DROP DATABASE IF EXISTS {name}")
    psql(admin, f"CREATE DATABASE {name}")
    return URL.format(name=name)


def driver(url: str, *args: str, **env: str) -> dict[str, Any]:
    process = subprocess.run(
        [sys.executable, str(DRIVER), *args],
        env={**os.environ, "DATABASE_URL": url, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(process.stdout.splitlines()[-1])


def cost(rounds: int) -> dict[str, Any]:
    url = fresh_database("bench_flow_cost")
    driver(url, "setup")
    keyed = {"BENCH_DJPQ_TASK": "keyed", "BENCH_DJPQ_LIMITS": json.dumps(NEVER_BINDS)}
    plain: list[float] = []
    with_keys: list[float] = []
    for _ in range(rounds):
        plain.append(driver(url, "drain", "--tasks", "2000")["per_second"])
        with_keys.append(driver(url, "drain", "--tasks", "2000", **keyed)["per_second"])
    return {
        "plain_per_second": plain,
        "keyed_per_second": with_keys,
        "ratio_of_medians": statistics.median(with_keys) / statistics.median(plain),
    }


def _django(url: str, limits: Any = None) -> Any:
    """Django set up on ``url`` with the benchmark project (and ``limits``)."""
    os.environ["DATABASE_URL"] = url
    os.environ["BENCH_DJPQ_LIMITS"] = json.dumps(limits)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "projects.djpq.settings")
    sys.path[:0] = [str(HERE), str(HERE / "drivers"), str(REPO)]
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from django.db import connection

    return connection


def _workers(url: str, count: int, concurrency: int, limits: Any) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "projects.djpq.settings",
        "BENCH_DJPQ_LIMITS": json.dumps(limits),
        "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE / "drivers"), str(REPO)]),
    }
    command = [sys.executable, "-m", "django", "pq_worker", "--queue", "bench"]
    return [
        subprocess.Popen(
            [*command, "--concurrency", str(concurrency)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait(60)


def rate_and_fairness(seconds: float) -> dict[str, Any]:
    limits = {"rated": {"rate": "20/s"}}
    connection = _django(fresh_database("bench_flow_rate"), limits)
    from projects.djpq.tasks import noop

    import django_pq as pq

    url = URL.format(name="bench_flow_rate")
    pq.enqueue_many(pq.prepare(noop, queue="bench", limit_key="rated") for _ in range(1500))
    workers = _workers(url, 4, 2, limits)
    time.sleep(seconds)  # the measurement window itself: the backlog is drained at the rate
    _stop(workers)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT floor(extract(epoch FROM started_at))::bigint AS second, count(*) "
            "FROM pq_tasks WHERE started_at IS NOT NULL GROUP BY 1 ORDER BY 1"
        )
        per_second = [count for _, count in cursor.fetchall()]
    # The first and last seconds are partial (the workers started and stopped in them).
    whole = per_second[1:-1]
    rate = {
        "limit_per_second": 20,
        "seconds": len(whole),
        "mean_per_second": statistics.mean(whole),
        "most_in_a_second": max(whole),
        "least_in_a_second": min(whole),
    }

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM pq_tasks")
    pq.enqueue_many(pq.prepare(noop, queue="bench", fair_key="A") for _ in range(20000))
    workers = _workers(url, 1, 2, None)
    deadline = time.monotonic() + 120
    while _count(connection, "status <> 'pending'") < 200 and time.monotonic() < deadline:
        time.sleep(0.05)  # A drains at full speed before B arrives
    b = pq.enqueue_many(pq.prepare(noop, queue="bench", fair_key="B") for _ in range(10))
    ids = [task.pk for task in b]
    while _count(connection, f"id = ANY(ARRAY{ids}) AND started_at IS NULL") and (
        time.monotonic() < deadline
    ):
        time.sleep(0.01)
    _stop(workers)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM max(started_at) - min(created_at)) FROM pq_tasks "
            "WHERE fair_key = 'B'"
        )
        (b_wait,) = cursor.fetchone()
        cursor.execute(
            "SELECT count(*) FROM pq_tasks WHERE fair_key = 'A' AND started_at >= "
            "(SELECT min(created_at) FROM pq_tasks WHERE fair_key = 'B') AND started_at <= "
            "(SELECT max(started_at) FROM pq_tasks WHERE fair_key = 'B')"
        )
        (a_between,) = cursor.fetchone()
    fairness = {
        "a_tasks": 20000,
        "b_tasks": 10,
        "seconds_from_b_enqueue_to_last_b_start": float(b_wait),
        "a_starts_meanwhile": int(a_between),
    }
    return {"rate": rate, "fairness": fairness}


def _count(connection: Any, where: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM pq_tasks WHERE {where}")
        return int(cursor.fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    results = {"cost": cost(args.rounds), **rate_and_fairness(args.seconds)}
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
