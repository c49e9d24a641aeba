"""Driver for django-pq (this repository; an installed django-pq comes first).

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench_djpq \\
        python benchmarks/drivers/djpq_driver.py drain --tasks 2000

Its worker is ``pq_worker`` with its defaults (woken by NOTIFY), serving only the
benchmark's queue; ``BENCH_DJPQ_WORKER_ARGS`` adds flags, e.g. ``--tasks-per-child=100``.
``BENCH_DJPQ_TASK=declared`` drains ``declared_noop`` (``@pq.task`` with a retry policy)
instead of the plain ``noop``; ``BENCH_DJPQ_TASK=keyed`` drains ``noop`` with flow keys
(``limit_key`` over 50 keys; the limits come from ``BENCH_DJPQ_LIMITS``, JSON).
The benchmark project is ``benchmarks/projects/djpq`` (django-pq and the benchmark's tasks).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent
#: The benchmark project and the shared workloads first; the repository's django-pq last.
PATHS = [str(BENCHMARKS), str(Path(__file__).resolve().parent)]
sys.path[:0] = PATHS
sys.path.append(str(BENCHMARKS.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "projects.djpq.settings")

import django  # noqa: E402

django.setup()

from common import System, main  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from projects.djpq.tasks import declared_noop, noop, record_start  # noqa: E402

from django_pq import enqueue, enqueue_many, prepare  # noqa: E402

#: The only queue the benchmark's workers serve.
QUEUE = "bench"


#: The task the drain runs: the plain function, or the declared one.
DRAINED = declared_noop if os.environ.get("BENCH_DJPQ_TASK") == "declared" else noop


#: With flow keys: each task's limit_key, over this many keys.
KEYS = 50 if os.environ.get("BENCH_DJPQ_TASK") == "keyed" else 0


def _insert(count: int) -> None:
    if KEYS:
        enqueue_many(prepare(DRAINED, queue=QUEUE, limit_key=f"k:{n % KEYS}") for n in range(count))
        return
    enqueue_many(prepare(DRAINED, queue=QUEUE) for _ in range(count))


def _drain_state() -> tuple[int, float | None, float | None]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE status = 'completed'), "
            "extract(epoch FROM min(started_at)), extract(epoch FROM max(finished_at)) "
            "FROM pq_tasks WHERE queue = %s",
            [QUEUE],
        )
        done, first, last = cursor.fetchone()
    return int(done), first and float(first), last and float(last)


def _clear() -> None:
    """Delete the benchmark's tasks and the records of its stopped workers."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM pq_tasks WHERE queue = %s", [QUEUE])
        cursor.execute("DELETE FROM pq_workers WHERE stopped_at IS NOT NULL")


def _worker_command(concurrency: int) -> list[str]:
    flags = shlex.split(os.environ.get("BENCH_DJPQ_WORKER_ARGS", ""))
    command = ["pq_worker", "--queue", QUEUE, "--concurrency", str(concurrency), *flags]
    return [sys.executable, "-m", "django", *command]


SYSTEM = System(
    database=connection.settings_dict["NAME"],
    enqueue_one=lambda: enqueue(noop, queue=QUEUE) and None,
    enqueue_record=lambda path, sample: enqueue(record_start, path, sample, queue=QUEUE) and None,
    # The drain's tasks are written as the bulk call writes them: one statement.
    enqueue_many=_insert,
    insert_for_drain=_insert,
    drain_state=_drain_state,
    worker_command=_worker_command,
    clear=_clear,
    setup=lambda: call_command("migrate", verbosity=0, interactive=False),
)

if __name__ == "__main__":
    # Workers import the settings and the tasks the same way.
    inherited = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    os.environ["PYTHONPATH"] = os.pathsep.join([*PATHS, *inherited, str(BENCHMARKS.parent)])
    main(SYSTEM)
