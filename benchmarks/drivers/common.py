"""The workloads every driver runs, the same way for each system (standard library only).

A driver module describes its system with a :class:`System` (how to enqueue one task,
enqueue many, start a worker process, read how far a drain got) and calls :func:`main`.
Each invocation runs one workload and prints one JSON object on stdout, so
``benchmarks/compare.py`` can run drivers in their own virtualenvs and Python versions.

Timing rules shared by all systems, django-pq included (``djpq_driver.py``):

- drain: tasks are written in one transaction before the worker starts; throughput is
  tasks / (last finish - first start), from the system's own database timestamps;
- latency: one task at a time to an idle, warmed-up worker; from the enqueue call
  returning (committed) to the task's first line, written to a FIFO;
- idle: the system's database is vacuumed first (so autovacuum has nothing to do), a
  warmed-up worker idles past PostgreSQL's statistics delay, then
  ``pg_stat_database.xact_commit`` of that database is read from another database through
  ``psql`` so the reads do not count;
- fork: the floor under fork-per-task, a fork that exits at once and its ``waitpid``, from
  the driver's process (the system loaded, like a worker).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass


def record_start(path: str, sample: int) -> None:
    """Body of every system's latency task: write ``"<sample> <time.time()>"`` to ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, f"{sample} {time.time()!r}\n".encode())
    finally:
        os.close(fd)


@dataclass
class System:
    """How a driver talks to its task queue."""

    database: str
    enqueue_one: Callable[[], None]
    enqueue_record: Callable[[str, int], None]
    insert_for_drain: Callable[[int], None]
    #: (completed, first start epoch, last finish epoch) of the tasks now in the table.
    drain_state: Callable[[], tuple[int, float | None, float | None]]
    worker_command: Callable[[int], list[str]]
    clear: Callable[[], None]
    enqueue_many: Callable[[int], None] | None = None
    setup: Callable[[], None] = lambda: None


def _start_worker(system: System, concurrency: int, log: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as output:
        return subprocess.Popen(
            system.worker_command(concurrency), stdout=output, stderr=subprocess.STDOUT
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def enqueue(system: System, count: int, bulk: int) -> dict[str, object]:
    system.clear()
    started = time.perf_counter()
    for _ in range(count):
        system.enqueue_one()
    single = count / (time.perf_counter() - started)
    system.clear()
    result: dict[str, object] = {"single_per_second": single, "bulk_per_second": None}
    if system.enqueue_many is not None:
        started = time.perf_counter()
        system.enqueue_many(bulk)
        result["bulk_per_second"] = bulk / (time.perf_counter() - started)
        result["bulk_vs_single"] = result["bulk_per_second"] / single  # type: ignore[operator]
        system.clear()
    return result


def drain(system: System, tasks: int, concurrency: int, processes: int, log: str) -> dict:
    system.clear()
    system.insert_for_drain(tasks)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    workers = [_start_worker(system, concurrency, log) for _ in range(processes)]
    deadline = time.monotonic() + max(120.0, tasks / 5)
    try:
        while True:
            done, first, last = system.drain_state()
            if done >= tasks:
                break
            if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
                raise SystemExit(f"drain stalled at {done}/{tasks}; see {log}")
            time.sleep(0.2)
    finally:
        for worker in workers:
            _stop(worker)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    window = (last - first) if first is not None and last is not None else wall
    system.clear()
    return {
        "tasks": tasks,
        "concurrency": concurrency,
        "workers": processes,
        "per_second": tasks / window,
        "seconds": window,
        "wall_seconds": wall,
        "cpu_ms_per_task": cpu * 1000 / tasks,
    }


class _Starts:
    """The FIFO latency tasks write to."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="bench-starts-")
        self.path = os.path.join(self.directory, "starts")
        os.mkfifo(self.path)
        self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)
        self.buffer = b""

    def wait(self, sample: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                number, stamp = line.split()
                if int(number) == sample:
                    return float(stamp)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SystemExit(f"latency task {sample} never started")
            if select.select([self.fd], [], [], remaining)[0]:
                with contextlib.suppress(BlockingIOError):
                    self.buffer += os.read(self.fd, 65536)

    def close(self) -> None:
        os.close(self.fd)
        shutil.rmtree(self.directory, ignore_errors=True)


def _warm_worker(system: System, log: str) -> tuple[subprocess.Popen[bytes], _Starts]:
    system.clear()
    starts = _Starts()
    worker = _start_worker(system, 2, log)
    try:
        system.enqueue_record(starts.path, -1)
        starts.wait(-1, 60.0)
    except BaseException:
        _stop(worker)
        starts.close()
        raise
    return worker, starts


def latency(system: System, samples: int, log: str) -> dict[str, object]:
    worker, starts = _warm_worker(system, log)
    measured: list[float] = []
    try:
        for sample in range(samples):
            time.sleep(random.uniform(0.05, 1.05))
            system.enqueue_record(starts.path, sample)
            committed = time.time()
            measured.append(starts.wait(sample, 60.0) - committed)
    finally:
        _stop(worker)
        starts.close()
        system.clear()
    measured.sort()

    def rank(percent: float) -> float:
        return measured[max(1, -(-len(measured) * percent // 100)) - 1] * 1000

    return {
        "samples": samples,
        "p50_ms": rank(50),
        "p95_ms": rank(95),
        "p99_ms": rank(99),
        "max_ms": measured[-1] * 1000,
    }


#: An idle backend publishes its statistics up to 10 s late (PostgreSQL's
#: PGSTAT_IDLE_INTERVAL): start-up chores must reach the counter before the window opens.
STATISTICS_DELAY = 11.0


def _admin_url() -> str:
    return os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _psql(url: str, sql: str) -> str:
    return subprocess.run(
        ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def _commits(database: str) -> int:
    sql = f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{database}'"
    return int(_psql(_admin_url(), sql))


def idle(system: System, seconds: float, log: str) -> dict[str, object]:
    # Autovacuum's transactions count in the same counter: leave it nothing to do.
    _psql(_admin_url().rsplit("/", 1)[0] + "/" + system.database, "VACUUM ANALYZE")
    worker, starts = _warm_worker(system, log)
    try:
        time.sleep(STATISTICS_DELAY)
        first = _commits(system.database)
        started = time.perf_counter()
        time.sleep(seconds)
        time.sleep(1.1)  # a busy session publishes its counts within about a second
        last = _commits(system.database)
        elapsed = time.perf_counter() - started
    finally:
        _stop(worker)
        starts.close()
        system.clear()
    return {"seconds": elapsed, "commits": last - first, "per_second": (last - first) / elapsed}


def fork(forks: int, concurrency: int) -> dict[str, object]:
    """Fork a child that exits at once and wait for it: serially, then ``concurrency`` at once."""
    started = time.perf_counter()
    for _ in range(forks):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    serial = time.perf_counter() - started
    started = time.perf_counter()
    in_flight = 0
    for _ in range(forks):
        if in_flight >= concurrency:
            os.wait()
            in_flight -= 1
        if os.fork() == 0:
            os._exit(0)
        in_flight += 1
    while in_flight:
        os.wait()
        in_flight -= 1
    parallel = time.perf_counter() - started
    with open("/proc/self/statm") as statm:
        rss_mb = int(statm.read().split()[1]) * resource.getpagesize() / 1048576
    return {
        "forks": forks,
        "ms_per_fork": serial * 1000 / forks,
        "serial_per_second": forks / serial,
        "concurrency": concurrency,
        "parallel_per_second": forks / parallel,
        "rss_mb": rss_mb,
    }


def main(system: System) -> None:
    """Parse ``WORKLOAD [options]``, run it, print its JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "workload", choices=["setup", "enqueue", "drain", "latency", "idle", "fork"]
    )
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--bulk", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--samples", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--forks", type=int, default=500)
    parser.add_argument("--log", default=os.path.join(tempfile.gettempdir(), "bench-worker.log"))
    args = parser.parse_args()
    if args.workload == "setup":
        system.setup()
        result: dict[str, object] = {"ok": True}
    elif args.workload == "enqueue":
        result = enqueue(system, args.count, args.bulk)
    elif args.workload == "drain":
        result = drain(system, args.tasks, args.concurrency, args.workers, args.log)
    elif args.workload == "latency":
        result = latency(system, args.samples, args.log)
    elif args.workload == "idle":
        result = idle(system, args.seconds, args.log)
    else:
        result = fork(args.forks, args.concurrency)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
