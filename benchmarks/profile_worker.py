"""Where a django-pq worker spends its time per task: phase timings of a real drain.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench_djpq \\
        python benchmarks/profile_worker.py --tasks 2000 --concurrency 2

Runs ``WorkerLoop`` in this process (``--burst``, queue ``pq_bench``) with timers wrapped
around its phases, in the parent and in every forked child, and prints milliseconds per
task for each. The timers cost a few microseconds per call; the sampling profiler view of
the same drain is ``py-spy record --format raw -- python -m django pq_worker --burst ...``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "projects.djpq.settings")

import django  # noqa: E402

django.setup()

from django.db import connections  # noqa: E402

from django_pq import bench  # noqa: E402
from django_pq.enqueueing import enqueue_many, prepare  # noqa: E402
from django_pq.worker import child, children, database, loop  # noqa: E402
from django_pq.worker.config import WorkerConfig  # noqa: E402

TOTALS: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
PARENT = os.getpid()
CHILD_LOG = os.path.join(tempfile.gettempdir(), f"pq-profile-children-{PARENT}.jsonl")


def timed(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            entry = TOTALS[name]
            entry[0] += 1
            entry[1] += time.perf_counter() - started

    return wrapper


def timed_sql(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(self: Any, sql: str, params: Any = None) -> Any:
        words = sql.split()
        kind = "claim" if "claimable" in sql else words[0] if words else "?"
        if "outcome" in sql:
            kind = "finish"
        return timed(f"parent: SQL {kind}", func)(self, sql, params)

    return wrapper


_real_exit = os._exit


def exit_with_report(code: int) -> None:
    if os.getpid() != PARENT:
        fd = os.open(CHILD_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, (json.dumps(dict(TOTALS)) + "\n").encode())
        os.close(fd)
    _real_exit(code)


def install() -> None:
    loop.fork_child = timed("parent: fork_child (fork + pipe + setpgid)", loop.fork_child)
    for name in (
        "_collect_children",
        "_flush_outcomes",
        "_wait",
        "_start",
        "_claim_if_due",
        "_heartbeat_if_due",
        "_reap_lost_if_due",
        "_schedule_next_run",
    ):
        if hasattr(loop.WorkerLoop, name):  # the loop changes; time what it has
            setattr(loop.WorkerLoop, name, timed(f"parent: {name}", getattr(loop.WorkerLoop, name)))
    children.judge = timed("parent: judge", children.judge)
    loop.judge = children.judge
    database.Database.execute = timed_sql(database.Database.execute)  # type: ignore[method-assign]
    loop.logger.info = timed("parent: logger.info", loop.logger.info)  # type: ignore[method-assign]
    child._prepare_process = timed("child: _prepare_process", child._prepare_process)
    child.resolve = timed("child: resolve (import task)", child.resolve)
    child.execute = timed("child: execute (whole)", child.execute)
    child.connections.close_all = timed("child: connections.close_all", connections.close_all)
    os._exit = exit_with_report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    with connections["default"].cursor() as cursor:
        cursor.execute("DELETE FROM pq_tasks WHERE queue = %s", [bench.QUEUE])
    enqueue_many(prepare(bench.noop, queue=bench.QUEUE) for _ in range(args.tasks))
    install()
    config = WorkerConfig.from_settings(
        concurrency=args.concurrency, queues=(bench.QUEUE,), burst=True
    )
    started = time.perf_counter()
    loop.WorkerLoop(config).run()
    wall = time.perf_counter() - started
    child_totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for line in Path(CHILD_LOG).read_text().splitlines():
        for name, (count, seconds) in json.loads(line).items():
            if name.startswith("child"):
                child_totals[name][0] += count
                child_totals[name][1] += seconds
    os.unlink(CHILD_LOG)
    print(
        f"{args.tasks} tasks, concurrency {args.concurrency}: {wall:.2f}s wall, "
        f"{args.tasks / wall:.1f} tasks/s, {wall * 1000 / args.tasks:.2f} ms wall per task"
    )
    print(f"{'phase':<52} {'calls':>7} {'ms/task':>8}")
    for name, (count, seconds) in sorted({**TOTALS, **child_totals}.items()):
        if name.startswith("parent") or name in child_totals:
            print(f"{name:<52} {int(count):>7} {seconds * 1000 / args.tasks:>8.3f}")
    with connections["default"].cursor() as cursor:
        cursor.execute("DELETE FROM pq_tasks WHERE queue = %s", [bench.QUEUE])


if __name__ == "__main__":
    main()
