"""Measuring django-pq on your own project: what ``manage.py pq_bench`` runs.

Every workload uses a queue of its own (:data:`QUEUE`) and real ``pq_worker`` processes
started with the same interpreter and settings as the command, so the figures include
everything a production worker does. Rows and worker records it writes are deleted before
and after each workload; none of the project's own tasks are touched.

Run it against a database no one else is using: other sessions add noise to every figure,
and above all to the idle load, which counts all commits in the database. A worker of
your own that serves every queue would also claim the benchmark's tasks.

The module also holds the benchmark's task functions (:func:`noop`, :func:`record_start`):
``django_pq`` is an installed app, so workers may run them.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import django
from django.conf import settings
from django.db import connections

from django_pq import __version__
from django_pq.conf import pq_settings
from django_pq.enqueueing import enqueue, enqueue_many, prepare

__all__ = [
    "QUEUE",
    "WORKLOADS",
    "BenchConfig",
    "BenchError",
    "format_table",
    "machine_info",
    "noop",
    "record_start",
    "run",
]

#: The queue every benchmark task goes to; its rows are deleted afterwards.
QUEUE = "pq_bench"

#: Workloads in the order they run.
WORKLOADS = ("fork", "enqueue", "drain", "latency", "idle")

_WORKER_START_TIMEOUT = 60.0


class BenchError(RuntimeError):
    """A workload could not run (a worker failed, a task never started); says what to check."""


# -- task functions ------------------------------------------------------------------------


def noop() -> None:
    """A task that does nothing: what is left is the cost of the queue and the fork."""


def record_start(path: str, sample: int) -> None:
    """Write ``"<sample> <time.time()>"`` to the FIFO or file at ``path`` as the task starts."""
    line = f"{sample} {time.time()!r}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line)  # shorter than PIPE_BUF: one atomic write
    finally:
        os.close(fd)


# -- configuration and results -------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and how much of it."""

    workloads: tuple[str, ...] = WORKLOADS
    tasks: int = 2000
    concurrency: int = 2
    workers: int = 1
    enqueue_count: int = 500
    bulk_count: int = 2000
    latency_samples: int = 50
    idle_seconds: float = 30.0
    forks: int = 500
    worker_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.workloads) - set(WORKLOADS))
        if unknown:
            raise ValueError(
                f"Unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}."
            )
        for name in ("tasks", "concurrency", "workers", "enqueue_count", "bulk_count", "forks"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {value}.")
        if self.latency_samples < 1:
            raise ValueError(f"latency-samples must be at least 1, got {self.latency_samples}.")
        if self.idle_seconds <= 0:
            raise ValueError(f"idle-seconds must be greater than 0, got {self.idle_seconds}.")


@dataclass
class Report:
    """Everything one run measured, ready for JSON."""

    machine: dict[str, Any]
    config: dict[str, Any]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run(config: BenchConfig, progress: Callable[[str], None] = lambda message: None) -> Report:
    """Run the chosen workloads in order and return their figures.

    The workers run this module's ``noop`` and ``record_start``: django-pq's own modules run
    only when named in ``PQ_ALLOWED_MODULES``, so the benchmark refuses to start without it.
    """
    from django_pq.task_paths import is_allowed_module

    if not is_allowed_module(__name__):
        raise BenchError(
            f"pq_bench runs {__name__}:noop and {__name__}:record_start in real workers, and "
            f"django-pq's own modules are not allowed to run by default. While you measure, "
            f"add {__name__!r} to PQ_ALLOWED_MODULES next to your own apps, e.g. "
            f"PQ_ALLOWED_MODULES = ['shop', {__name__!r}] (and silence django_pq.W002 if "
            "you keep it)."
        )
    report = Report(machine=machine_info(), config=asdict(config))
    report.warnings += _competing_workers()
    measure: dict[str, Callable[[BenchConfig], dict[str, Any]]] = {
        "fork": measure_fork_floor,
        "enqueue": measure_enqueue,
        "drain": measure_drain,
        "latency": measure_latency,
        "idle": measure_idle_load,
    }
    try:
        for workload in WORKLOADS:
            if workload in config.workloads:
                progress(f"Measuring {workload} ...")
                _clean_up()
                report.results[workload] = measure[workload](config)
    finally:
        _clean_up()
    return report


# -- workloads ------------------------------------------------------------------------------


def measure_fork_floor(config: BenchConfig) -> dict[str, Any]:
    """The floor under fork-per-task: fork a child that exits at once, wait for it.

    Serially, and with ``concurrency`` children in flight, from this process (a Django
    process with your project loaded, like a worker).
    """
    started = time.perf_counter()
    for _ in range(config.forks):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child leaves at once
            os._exit(0)
        os.waitpid(pid, 0)
    serial = time.perf_counter() - started

    started = time.perf_counter()
    in_flight = 0
    for _ in range(config.forks):
        if in_flight >= config.concurrency:
            os.wait()
            in_flight -= 1
        if os.fork() == 0:  # pragma: no cover - the child leaves at once
            os._exit(0)
        in_flight += 1
    while in_flight:
        os.wait()
        in_flight -= 1
    parallel = time.perf_counter() - started
    return {
        "forks": config.forks,
        "ms_per_fork": serial * 1000 / config.forks,
        "serial_per_second": config.forks / serial,
        "concurrency": config.concurrency,
        "parallel_per_second": config.forks / parallel,
        "rss_mb": _rss_mb(),
    }


def measure_enqueue(config: BenchConfig) -> dict[str, Any]:
    """Single-row ``enqueue`` (autocommit, one transaction each) and one ``enqueue_many``."""
    started = time.perf_counter()
    for _ in range(config.enqueue_count):
        enqueue(noop, queue=QUEUE)
    single = time.perf_counter() - started
    _clean_up()
    started = time.perf_counter()
    enqueue_many(prepare(noop, queue=QUEUE) for _ in range(config.bulk_count))
    bulk = time.perf_counter() - started
    single_rate = config.enqueue_count / single
    bulk_rate = config.bulk_count / bulk
    return {
        "single_count": config.enqueue_count,
        "single_per_second": single_rate,
        "single_ms": single * 1000 / config.enqueue_count,
        "bulk_count": config.bulk_count,
        "bulk_per_second": bulk_rate,
        "bulk_vs_single": bulk_rate / single_rate,
    }


def measure_drain(config: BenchConfig) -> dict[str, Any]:
    """Enqueue ``tasks`` no-ops, then run ``workers`` x ``pq_worker --burst`` until done.

    Throughput comes from the rows' own database timestamps (first start to last finish),
    so worker start-up is not in it; the wall time includes it.
    """
    enqueue_many(prepare(noop, queue=QUEUE) for _ in range(config.tasks))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with _workers(config, config.workers, "--burst") as workers:
        for worker in workers:
            worker.wait_for_exit(timeout=max(120.0, config.tasks / 2))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    with connections[pq_settings.DATABASE].cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FILTER (WHERE status = 'completed'), count(*),
                   extract(epoch FROM max(finished_at) - min(started_at))
            FROM pq_tasks WHERE queue = %s
            """,
            [QUEUE],
        )
        completed, total, window = cursor.fetchone()
    if completed != config.tasks:
        raise BenchError(
            f"Only {completed} of {config.tasks} benchmark tasks completed "
            f"({total} rows left in queue {QUEUE!r}). Run `manage.py pq_worker --queue "
            f"{QUEUE} --burst -v 2` to see why."
        )
    window = float(window or 0.0) or wall
    return {
        "tasks": config.tasks,
        "workers": config.workers,
        "concurrency": config.concurrency,
        "per_second": completed / window,
        "seconds": window,
        "wall_seconds": wall,
        "cpu_ms_per_task": cpu * 1000 / config.tasks,
    }


def measure_latency(config: BenchConfig) -> dict[str, Any]:
    """Enqueue one task at a time to an idle worker; time from commit to the task's start.

    The commit moment is when ``enqueue()`` returns in autocommit; the start is the first
    line of the task, written to a FIFO this process waits on. A random pause of 0.05-1.05 s
    before each sample lets the worker go idle and spreads samples over a poll cycle.
    """
    samples: list[float] = []
    with _fifo() as (path, fd), _workers(config, 1) as _:
        _wait_for_sample(fd, path, -1, _WORKER_START_TIMEOUT)  # the worker is up and warm
        for sample in range(config.latency_samples):
            time.sleep(random.uniform(0.05, 1.05))
            enqueue(record_start, path, sample, queue=QUEUE)
            committed = time.time()
            samples.append(_wait_for_sample(fd, path, sample, 30.0) - committed)
    samples.sort()
    return {
        "samples": len(samples),
        "p50_ms": _percentile(samples, 50) * 1000,
        "p95_ms": _percentile(samples, 95) * 1000,
        "p99_ms": _percentile(samples, 99) * 1000,
        "max_ms": samples[-1] * 1000,
    }


def measure_idle_load(config: BenchConfig) -> dict[str, Any]:
    """Commits per second in this database while one worker idles (and nothing else should).

    Read from ``pg_stat_database.xact_commit``; the two reads are transactions of their
    own, and the first is taken out of the count. Postgres publishes a session's counts
    within about a second, so longer windows are more exact.
    """
    # Autovacuum's transactions count in the same counter: clean up after the workloads
    # before this one first, so it has nothing to do while the worker idles.
    with connections[pq_settings.DATABASE].cursor() as cursor:
        for table in ("pq_tasks", "pq_workers", "pq_periodic"):
            cursor.execute(f"VACUUM ANALYZE {table}")
    with _fifo() as (path, fd), _workers(config, 1) as _:
        _wait_for_sample(fd, path, -1, _WORKER_START_TIMEOUT)
        # Let the start-up chores pass and reach the counters: an idle backend publishes
        # its statistics up to 10 s late (PostgreSQL's PGSTAT_IDLE_INTERVAL).
        time.sleep(11.0)
        _commits()  # connect (and set the session's time zone) before the window opens
        first = _commits()
        started = time.perf_counter()
        time.sleep(config.idle_seconds)
        last = _commits()
        seconds = time.perf_counter() - started
    commits = max(last - first - 1, 0)
    return {
        "seconds": seconds,
        "commits": commits,
        "per_second": commits / seconds,
    }


# -- helpers -------------------------------------------------------------------------------


class _Worker:
    """One ``pq_worker`` subprocess serving only the benchmark queue."""

    def __init__(self, config: BenchConfig, *flags: str) -> None:
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - open for the process's life
            prefix="pq-bench-worker-", suffix=".log", delete=False
        )
        command = [
            sys.executable,
            "-m",
            "django",
            "pq_worker",
            "--queue",
            QUEUE,
            "--concurrency",
            str(config.concurrency),
            *config.worker_args,
            *flags,
        ]
        self.process = subprocess.Popen(
            command, env=_worker_env(), stdout=self.log, stderr=subprocess.STDOUT
        )
        self.failed = False

    def wait_for_exit(self, timeout: float) -> None:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.failed = True
            raise BenchError(
                f"A pq_worker did not finish within {timeout:.0f}s; its log: {self.log.name}"
            ) from None
        if code != 0:
            self.failed = True
            raise BenchError(f"A pq_worker exited with status {code}; its log: {self.log.name}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        if self.process.returncode == 0 and not self.failed:
            os.unlink(self.log.name)


@contextlib.contextmanager
def _workers(config: BenchConfig, count: int, *flags: str) -> Iterator[list[_Worker]]:
    # Workers must not inherit this process's connection state mid-transaction.
    connections[pq_settings.DATABASE].close()
    workers = [_Worker(config, *flags) for _ in range(count)]
    try:
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def _worker_env() -> dict[str, str]:
    """This process's environment, with its settings module and import path made explicit."""
    module = os.environ.get("DJANGO_SETTINGS_MODULE") or str(
        getattr(settings, "SETTINGS_MODULE", "")
    )
    paths = [os.getcwd(), *(entry for entry in sys.path if entry)]
    return {**os.environ, "DJANGO_SETTINGS_MODULE": module, "PYTHONPATH": os.pathsep.join(paths)}


@contextlib.contextmanager
def _fifo() -> Iterator[tuple[str, int]]:
    """A FIFO that benchmark tasks write their start times to, open for reading."""
    directory = tempfile.mkdtemp(prefix="pq-bench-")
    path = os.path.join(directory, "starts")
    os.mkfifo(path)
    # Read-write, so the FIFO always has a reader (writers never block or fail) and
    # this side never sees end-of-file between writers.
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        enqueue(record_start, path, -1, queue=QUEUE)
        yield path, fd
    finally:
        os.close(fd)
        _pending_lines.pop(fd, None)
        shutil.rmtree(directory, ignore_errors=True)


_pending_lines: dict[int, bytes] = {}


def _wait_for_sample(fd: int, path: str, sample: int, timeout: float) -> float:
    """Block until the task for ``sample`` reports; return its start time (``time.time()``)."""
    deadline = time.monotonic() + timeout
    buffered = _pending_lines.pop(fd, b"")
    while True:
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            number, stamp = line.split()
            if int(number) == sample:
                _pending_lines[fd] = buffered
                return float(stamp)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BenchError(
                f"The benchmark task did not start within {timeout:.0f}s. Is a pq_worker "
                f"able to run django_pq.bench:record_start (PQ_ALLOWED_MODULES)?"
            )
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            with contextlib.suppress(BlockingIOError):
                buffered += os.read(fd, 65536)


def _commits() -> int:
    with connections[pq_settings.DATABASE].cursor() as cursor:
        cursor.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        return int(cursor.fetchone()[0])


def _clean_up() -> None:
    """Delete the benchmark's task rows and the records of its stopped workers."""
    with connections[pq_settings.DATABASE].cursor() as cursor:
        cursor.execute("DELETE FROM pq_tasks WHERE queue = %s", [QUEUE])
        cursor.execute(
            "DELETE FROM pq_workers WHERE queues = jsonb_build_array(%s::text) "
            "AND stopped_at IS NOT NULL",
            [QUEUE],
        )


def _competing_workers() -> list[str]:
    with connections[pq_settings.DATABASE].cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FROM pq_workers
            WHERE stopped_at IS NULL AND lease_expires_at > now()
              AND (queues = '[]'::jsonb OR queues ? %s)
            """,
            [QUEUE],
        )
        count = int(cursor.fetchone()[0])
    if not count:
        return []
    return [
        f"{count} live worker(s) serve every queue (or {QUEUE!r}) and may take benchmark "
        "tasks; stop them, or run the benchmark against a database of its own."
    ]


def _percentile(ordered: list[float], percent: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, -(-len(ordered) * percent // 100))
    return ordered[int(rank) - 1]


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 1048576


def machine_info() -> dict[str, Any]:
    """Where the figures come from: machine, Python, Django, Postgres and django-pq."""
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gb: float | None = None
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as meminfo:
        memory_gb = round(int(meminfo.readline().split()[1]) / 1048576, 1)
    with connections[pq_settings.DATABASE].cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = str(cursor.fetchone()[0])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gb": memory_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "django_pq": __version__,
        "postgres": postgres,
    }


_LABELS: dict[str, dict[str, str]] = {
    "fork": {
        "ms_per_fork": "fork+exit+wait, serial (ms)",
        "serial_per_second": "fork floor, serial (/s)",
        "parallel_per_second": "fork floor at concurrency (/s)",
        "rss_mb": "resident size of this process (MB)",
    },
    "enqueue": {
        "single_per_second": "enqueue(), one transaction each (/s)",
        "bulk_per_second": "enqueue_many() (/s)",
        "bulk_vs_single": "enqueue_many() / enqueue() (x)",
    },
    "drain": {
        "per_second": "drain throughput, no-op tasks (/s)",
        "cpu_ms_per_task": "worker CPU per task, incl. start-up (ms)",
        "wall_seconds": "wall time incl. worker start-up (s)",
    },
    "latency": {
        "p50_ms": "pickup latency p50 (ms)",
        "p95_ms": "pickup latency p95 (ms)",
        "p99_ms": "pickup latency p99 (ms)",
    },
    "idle": {"per_second": "idle worker, commits per second"},
}


def format_table(report: Report) -> str:
    """The report as an aligned two-column table, one line per figure."""
    rows: list[tuple[str, str]] = []
    for workload, figures in report.results.items():
        for key, label in _LABELS[workload].items():
            value = figures.get(key)
            if isinstance(value, float):
                rows.append((label, f"{value:,.2f}" if value < 100 else f"{value:,.0f}"))
    drain, fork = report.results.get("drain"), report.results.get("fork")
    if drain and fork:
        share = drain["per_second"] / fork["parallel_per_second"]
        rows.append(("drain / fork floor at concurrency", f"{share:.0%}"))
    width = max((len(label) for label, _ in rows), default=0)
    lines = [f"{label:<{width}}  {value:>10}" for label, value in rows]
    lines += [f"warning: {warning}" for warning in report.warnings]
    return "\n".join(lines)
