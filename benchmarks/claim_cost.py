"""The claim statement's own cost, in the database, with and without flow keys.

    python benchmarks/claim_cost.py [--before aafe297] [--claims 400] [--rounds 5]

A drain's figures are dominated by the fork (about 16 ms of a task's 17 on the 2-core
machine of the performance page), so the few hundred microseconds a claim spends on flow
keys drown in its noise. This measures the claim itself: over a backlog of 2,000 pending
no-op tasks, ``--claims`` claims of one task each, every one in its own transaction that is
rolled back (so the backlog stays as it is), timed from the client, on a psycopg
connection like the worker's (statements prepared after five runs). Workloads:

- ``plain``: tasks without keys;
- ``keyed``: a ``limit_key`` over 50 keys, under a limit that never binds
  (``k:*`` at concurrency 1,000), the key rows made by an earlier claim;
- ``before`` (with ``--before REV``): plain tasks and the claim of that revision.

The workloads take turns, round after round; medians of the per-round medians are printed
as JSON. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
URL = "postgresql://postgres@127.0.0.1:5432/{name}"

#: Run in a revision's checkout: prepares its database, then times claims; prints JSON.
PROBE = r"""
import json, os, sys, time, uuid
import django
os.environ["DJANGO_SETTINGS_MODULE"] = "projects.djpq.settings"
django.setup()
from django.core.management import call_command
from django.db import connection
import django_pq as pq
from django_pq.store import worker as sql
from projects.djpq.tasks import noop

workload, claims = sys.argv[1], int(sys.argv[2])
call_command("migrate", verbosity=0, interactive=False)
with connection.cursor() as cursor:
    cursor.execute("DELETE FROM pq_tasks")
if workload == "keyed":
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM pq_limits")
    from django.test import override_settings
    with override_settings(PQ_LIMITS={"k:*": {"concurrency": 1000}}):
        pq.sync_limits()
    pq.enqueue_many(pq.prepare(noop, queue="bench", limit_key=f"k:{n % 50}") for n in range(2000))
else:
    pq.enqueue_many(pq.prepare(noop, queue="bench") for _ in range(2000))
scope = sql.ClaimFilter(queues=["bench"])
# The statement the worker uses: the plain claim while no limit exists (where the
# revision has one), the flow claim for keyed tasks under a limit.
plain = getattr(sql, "plain_claim_statement", sql.claim_statement)
statement = sql.claim_statement(scope) if workload == "keyed" else plain(scope)
params = sql.claim_params(scope, str(uuid.uuid4()), 1)
import psycopg  # the worker's own kind of connection: statements prepared after 5 runs

raw = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
with raw.cursor() as cursor:
    cursor.execute("ANALYZE pq_tasks")
    for _ in range(60):  # the key rows, and a warm cache
        cursor.execute(statement, params)
    cursor.execute("UPDATE pq_tasks SET status = 'pending', run_token = NULL, attempts = 0")
raw.autocommit = False
times = []
with raw.cursor() as cursor:
    for _ in range(claims):
        started = time.perf_counter()
        cursor.execute(statement, params)
        rows = cursor.fetchall()
        times.append(time.perf_counter() - started)
        raw.rollback()
        assert any(row[0] is not None for row in rows), rows
times.sort()
p50, mean = times[len(times) // 2], sum(times) / len(times)
print(json.dumps({"p50_ms": p50 * 1000, "mean_ms": mean * 1000}))
"""


def checkout(revision: str, into: Path) -> Path:
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(into), revision],
        check=True,
        capture_output=True,
    )
    return into


def probe(tree: Path, database: str, workload: str, claims: int) -> dict[str, float]:
    env = {
        **os.environ,
        "DATABASE_URL": URL.format(name=database),
        "PYTHONPATH": os.pathsep.join(
            [str(tree / "benchmarks"), str(tree / "benchmarks" / "drivers"), str(tree)]
        ),
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, workload, str(claims)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tree,
    )
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.splitlines()[-1])


def fresh(database: str) -> None:
    admin = URL.format(name="postgres")
    for statement in (f"DROP DATABASE IF EXISTS {database}", f"CREATE DATABASE {database}"):
        subprocess.run(["psql", "-X", "-q", "-d", admin, "-c", statement], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before")
    parser.add_argument("--claims", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    trees = {"plain": (REPO, "bench_claim_plain"), "keyed": (REPO, "bench_claim_keyed")}
    scratch = Path(tempfile.mkdtemp(prefix="claim-cost-"))
    if args.before:
        trees["before"] = (checkout(args.before, scratch / "before"), "bench_claim_before")
    for _, database in trees.values():
        fresh(database)
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    try:
        for number in range(args.rounds):
            order = list(trees) if number % 2 == 0 else list(reversed(trees))
            for name in order:
                tree, database = trees[name]
                workload = "keyed" if name == "keyed" else "plain"
                rounds[name].append(probe(tree, database, workload, args.claims))
    finally:
        if args.before:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(scratch / "before")],
                check=False,
            )
    summary = {
        name: {
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "rounds_p50_ms": [round(r["p50_ms"], 3) for r in runs],
        }
        for name, runs in rounds.items()
    }
    summary["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
