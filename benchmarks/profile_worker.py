"""Where a django-pq worker spends its time per task: phase timings of a real drain.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench_djpq \\
        python benchmarks/profile_worker.py --tasks 2000 --concurrency 2

Runs ``WorkerLoop`` in this process (``--burst``, the benchmark's queue) with timers
wrapped around the functions in :data:`TARGETS`, in the parent and in every forked child,
and prints milliseconds per task for each; the transactions are split into claims and
finishes by the statements they run. The timers cost a few microseconds per call; the
sampling profiler's view of the same drain is
``py-spy record --format raw -- python -m django pq_worker --burst ...``.

The targets are private functions of the worker and change with it. A target that no
longer exists, or that the drain never called, stops the script with a non-zero exit that
names it: update :data:`TARGETS` to what the worker now does.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: (object to time, as ``module:attribute.path``, label). ``parent`` labels run in the
#: worker parent; ``child`` labels in the forked children.
TARGETS = [
    ("django_pq.worker.loop:WorkerLoop._write_and_claim", "parent: record finished + claim"),
    ("django_pq.worker.database:Database.run_in_transaction", "parent: SQL transaction"),
    ("django_pq.worker.loop:WorkerLoop._start", "parent: start a task"),
    ("django_pq.worker.loop:fork_child", "parent: fork_child (fork + pipes + setpgid)"),
    ("django_pq.worker.loop:WorkerLoop._collect_children", "parent: collect reports and exits"),
    ("django_pq.worker.loop:WorkerLoop._record", "parent: judge and buffer an outcome"),
    ("django_pq.worker.loop:WorkerLoop._heartbeat_if_due", "parent: heartbeat if due"),
    ("django_pq.worker.loop:WorkerLoop._wait", "parent: wait (poll)"),
    ("django_pq.worker.child:_prepare_process", "child: prepare the process"),
    ("django_pq.worker.child:run_task", "child: run_task (resolve, decode, hooks, task)"),
    ("django_pq.worker.child:resolve", "child: resolve (import the task)"),
    ("django_pq.worker.child:_write_line", "child: write the report"),
]

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "drivers")]
sys.path.append(str(HERE.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "projects.djpq.settings")

import django  # noqa: E402

django.setup()

from django.db import connections  # noqa: E402
from projects.djpq.tasks import noop  # noqa: E402

from django_pq import enqueue_many, prepare  # noqa: E402
from django_pq.worker.config import WorkerConfig  # noqa: E402
from django_pq.worker.loop import WorkerLoop  # noqa: E402

QUEUE = "bench"
TOTALS: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
PARENT = os.getpid()
CHILD_LOG = os.path.join(tempfile.gettempdir(), f"pq-profile-children-{PARENT}.jsonl")
_real_exit = os._exit


class MissingTarget(SystemExit):
    """A target of the profile is not in the worker (any more)."""

    def __init__(self, target: str, why: str) -> None:
        super().__init__(
            f"profile_worker.py: target {target} {why}; update TARGETS at the top of "
            f"{Path(__file__).name} to what django_pq/worker does now."
        )


def locate(target: str) -> tuple[Any, str, Any]:
    """The (owner, attribute name, value) that ``module:attribute.path`` names."""
    module_name, _, path = target.partition(":")
    try:
        owner: Any = importlib.import_module(module_name)
    except ImportError:
        raise MissingTarget(target, f"is missing: no module {module_name}") from None
    *parents, name = path.split(".")
    for part in parents:
        if not hasattr(owner, part):
            raise MissingTarget(target, f"is missing: {module_name} has no {part}")
        owner = getattr(owner, part)
    if not hasattr(owner, name):
        raise MissingTarget(target, f"is missing: no attribute {name}")
    return owner, name, getattr(owner, name)


def add(label: str, started: float) -> None:
    entry = TOTALS[label]
    entry[0] += 1
    entry[1] += time.perf_counter() - started


def timed(label: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            add(label, started)

    return wrapper


def timed_transaction(label: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Time a transaction under ``label``, and as a claim, a finish, or both at once (read
    from the statement's name in django_pq.worker.faults.STATEMENTS)."""

    @functools.wraps(func)
    def wrapper(self: Any, name: str, statements: list[Any], *args: Any, **kwargs: Any) -> Any:
        finishes = name in {"finish", "finish_claim", "finish_one", "reap"}
        claims = name in {"claim", "finish_claim"}
        kind = " + ".join(k for k, yes in (("finish", finishes), ("claim", claims)) if yes)
        started = time.perf_counter()
        try:
            return func(self, name, statements, *args, **kwargs)
        finally:
            add(label, started)
            add(f"parent: SQL {kind or 'other'}", started)

    return wrapper


def exit_with_report(code: int) -> None:
    if os.getpid() != PARENT:
        fd = os.open(CHILD_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, (json.dumps(dict(TOTALS)) + "\n").encode())
        os.close(fd)
    _real_exit(code)


def install() -> None:
    """Wrap every target; stop with the first that is missing, before anything runs."""
    located = [(locate(target), label) for target, label in TARGETS]
    for (owner, name, func), label in located:
        if name == "run_in_transaction":
            setattr(owner, name, timed_transaction(label, func))
        else:
            setattr(owner, name, timed(label, func))
    os._exit = exit_with_report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    install()
    with connections["default"].cursor() as cursor:
        cursor.execute("DELETE FROM pq_tasks WHERE queue = %s", [QUEUE])
    enqueue_many(prepare(noop, queue=QUEUE) for _ in range(args.tasks))
    config = WorkerConfig.from_settings(concurrency=args.concurrency, queues=(QUEUE,), burst=True)
    started = time.perf_counter()
    WorkerLoop(config).run()
    wall = time.perf_counter() - started
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    totals.update({name: entry for name, entry in TOTALS.items() if name.startswith("parent")})
    log = Path(CHILD_LOG)
    for line in log.read_text().splitlines() if log.exists() else []:
        for name, (count, seconds) in json.loads(line).items():
            if name.startswith("child"):
                totals[name][0] += count
                totals[name][1] += seconds
    log.unlink(missing_ok=True)
    with connections["default"].cursor() as cursor:
        cursor.execute("DELETE FROM pq_tasks WHERE queue = %s", [QUEUE])
    print(
        f"{args.tasks} tasks, concurrency {args.concurrency}: {wall:.2f}s wall, "
        f"{args.tasks / wall:.1f} tasks/s, {wall * 1000 / args.tasks:.2f} ms wall per task"
    )
    print(f"{'phase':<52} {'calls':>7} {'ms/task':>8}")
    for name, (count, seconds) in sorted(totals.items()):
        print(f"{name:<52} {int(count):>7} {seconds * 1000 / args.tasks:>8.3f}")
    never = [f"{target} ({label})" for target, label in TARGETS if label not in totals]
    if never:
        raise SystemExit(
            "profile_worker.py: the drain never called "
            + ", ".join(never)
            + f"; the worker no longer goes through it: update TARGETS in {Path(__file__).name}."
        )


if __name__ == "__main__":
    main()
