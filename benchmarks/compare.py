"""Side-by-side benchmark: django-pq against pq 0.9.1, procrastinate and django-tasks-db.

Every system gets its own database on the same Postgres, the same workloads with the
same timing rules (``drivers/common.py``, driven by one driver per system, django-pq's
being ``drivers/djpq_driver.py``), and the systems take turns: each round runs every
workload for every system, in an order that rotates from round to round. The report gives
medians, spreads (min-max) and ratios against pq, writes JSON, and with ``--write-docs``
renders ``docs/explanation/performance.md``.

    python benchmarks/compare.py --write-docs          # full run (about 10-15 minutes)
    python benchmarks/compare.py --quick                # smoke run (about a minute)

Each peer needs a virtualenv of its own (``--pq-python``, ``--peers-python``); a system
whose interpreter is missing is skipped and the report says so. The Postgres server is
``--admin-url`` (a superuser; databases ``bench_*`` are dropped and re-created).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DRIVERS = HERE / "drivers"
DOCS_PAGE = REPO / "docs" / "explanation" / "performance.md"

SYSTEMS = ("pq", "django-pq", "procrastinate", "django-tasks-db")
#: Database names, after ``--db-prefix`` (default ``bench_``).
DATABASES = {
    "pq": "pq",
    "django-pq": "djpq",
    "procrastinate": "procrastinate",
    "django-tasks-db": "tasksdb",
}
PACKAGES = {
    "pq": "python-pq",
    "django-pq": "django-pq-tasks",
    "procrastinate": "procrastinate",
    "django-tasks-db": "django-tasks-db",
}
#: Peers that run tasks in their own process (no fork) are also drained with two processes.
NON_FORKING = ("procrastinate", "django-tasks-db")


@dataclass(frozen=True)
class Sizes:
    """How much of each workload one run does."""

    rounds: int
    tasks: int
    enqueue_count: int
    bulk_count: int
    latency_samples: int
    idle_seconds: float
    forks: int
    history: int


FULL = Sizes(
    rounds=3,
    tasks=2000,
    enqueue_count=2000,
    bulk_count=2000,
    latency_samples=20,
    # Long enough that the benchmark's own counter reads and a late-published statistic
    # (a commit or two) do not swamp a heartbeat every 10 s.
    idle_seconds=60.0,
    forks=500,
    history=1_000_000,
)
QUICK = Sizes(
    rounds=1,
    tasks=100,
    enqueue_count=30,
    bulk_count=200,
    latency_samples=3,
    idle_seconds=2.0,
    forks=50,
    history=0,
)


class Runner:
    """Runs one workload of one system and returns its figures."""

    def __init__(self, args: argparse.Namespace, sizes: Sizes) -> None:
        self.args = args
        self.sizes = sizes
        self.log = Path(tempfile.gettempdir()) / "bench-compare-worker.log"
        self.python = {
            "pq": args.pq_python,
            "django-pq": args.djpq_python,
            "procrastinate": args.peers_python,
            "django-tasks-db": args.peers_python,
        }

    def url(self, system: str) -> str:
        return self.args.admin_url.rsplit("/", 1)[0] + "/" + self.database(system)

    def database(self, system: str) -> str:
        return f"{self.args.db_prefix}{DATABASES[system]}"

    def env(self, system: str) -> dict[str, str]:
        url = self.url(system)
        return {
            **os.environ,
            "BENCH_ADMIN_URL": self.args.admin_url,
            "BENCH_PQ_URL": url,
            "BENCH_PROCRASTINATE_URL": url,
            "BENCH_TASKSDB_URL": url,
            "DATABASE_URL": url,
            "DJANGO_SETTINGS_MODULE": "projects.djpq.settings",
            "PYTHONPATH": os.pathsep.join([str(HERE), str(DRIVERS), str(REPO)]),
        }

    def available(self, system: str) -> bool:
        return Path(self.python[system]).exists()

    def _call(
        self, system: str, command: list[str], timeout: float = 900, **env: str
    ) -> dict[str, Any]:
        done = subprocess.run(
            [self.python[system], *command],
            env={**self.env(system), **env},
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{system} {' '.join(command)} failed:\n{done.stderr[-3000:]}")
        # A driver prints one line of JSON, after any noise.
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    def _driver(self, system: str, *args: str, worker_args: tuple[str, ...] = ()) -> dict[str, Any]:
        script = {
            "pq": "pq_driver.py",
            "django-pq": "djpq_driver.py",
            "procrastinate": "procrastinate_driver.py",
            "django-tasks-db": "tasksdb_driver.py",
        }[system]
        flags = shlex.join([*self.args.djpq_worker_arg, *worker_args])
        return self._call(
            system,
            [str(DRIVERS / script), *args, "--log", str(self.log)],
            BENCH_DJPQ_WORKER_ARGS=flags,
        )

    def setup(self, system: str) -> None:
        database = self.database(system)
        psql(self.args.admin_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        psql(self.args.admin_url, f"CREATE DATABASE {database}")
        self._driver(system, "setup")

    def version(self, system: str) -> str:
        code = f"import importlib.metadata as m; print(m.version({PACKAGES[system]!r}))"
        done = subprocess.run(
            [self.python[system], "-c", code], capture_output=True, text=True, check=False
        )
        python = subprocess.run(
            [self.python[system], "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            check=False,
        )
        return f"{done.stdout.strip() or '?'} (Python {python.stdout.strip()})"

    def run(self, system: str, workload: str) -> dict[str, Any]:
        s = self.sizes
        if workload == "fork":
            return self._driver(system, "fork", "--forks", str(s.forks), "--concurrency", "2")
        if workload == "drain_reuse":
            # django-pq's opt-in child reuse: one fork runs up to 100 tasks in turn.
            return self._driver(
                system,
                "drain",
                "--tasks",
                str(s.tasks),
                "--concurrency",
                "2",
                worker_args=("--tasks-per-child=100",),
            )
        if workload == "enqueue":
            return self._driver(
                system, "enqueue", "--count", str(s.enqueue_count), "--bulk", str(s.bulk_count)
            )
        if workload == "drain":
            return self._driver(system, "drain", "--tasks", str(s.tasks), "--concurrency", "2")
        if workload == "drain_2_workers":
            return self._driver(
                system, "drain", "--tasks", str(s.tasks), "--concurrency", "1", "--workers", "2"
            )
        if workload == "latency":
            return self._driver(system, "latency", "--samples", str(s.latency_samples))
        if workload == "idle":
            return self._driver(system, "idle", "--seconds", str(s.idle_seconds))
        raise ValueError(workload)

    def history(self, rows: int) -> dict[str, Any]:
        """django-pq's drain with ``rows`` finished tasks already in pq_tasks."""
        url = self.url("django-pq")
        psql(
            url,
            f"""
            INSERT INTO pq_tasks (queue, name, payload, priority, status, run_at, created_at,
                started_at, finished_at, attempts, max_attempts, error, error_code,
                is_cancel_requested)
            SELECT 'history', 'projects.djpq.tasks:noop', '{{"args": [], "kwargs": {{}}}}', 50,
                'completed', now() - interval '1 hour', now() - interval '1 hour',
                now() - interval '1 hour', now() - interval '1 hour', 1, 1, '', '', false
            FROM generate_series(1, {rows})
        """,
        )
        psql(url, "VACUUM ANALYZE pq_tasks")
        try:
            result = self.run("django-pq", "drain")
        finally:
            psql(url, "DELETE FROM pq_tasks WHERE queue = 'history'")
            psql(url, "VACUUM ANALYZE pq_tasks")
        return {"finished_rows": rows, **result}


def psql(url: str, sql: str) -> str:
    """Run one statement with psql; returns its unaligned output."""
    done = subprocess.run(
        ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"psql failed: {done.stderr.strip()}\n{sql}")
    return done.stdout.strip()


def machine(admin_url: str) -> dict[str, Any]:
    """nproc, CPU model, memory, kernel, Postgres."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gb": round(memory_kb / 1048576, 1),
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", platform.system())
        if hasattr(platform, "freedesktop_os_release")
        else platform.system(),
        "postgres": psql(admin_url, "SHOW server_version"),
    }


def summarize(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


#: (workload, figure, label, better) rows of the results table.
FIGURES = [
    ("drain", "per_second", "Drain, 2,000 no-op tasks, 1 worker, concurrency 2 (tasks/s)", "high"),
    ("drain", "cpu_ms_per_task", "  worker CPU per task, incl. start-up (ms)", "low"),
    ("drain_2_workers", "per_second", "Drain, 2 worker processes, concurrency 1 (tasks/s)", "high"),
    (
        "drain_reuse",
        "per_second",
        "Drain, 1 worker, concurrency 2, --tasks-per-child=100 (tasks/s)",
        "high",
    ),
    ("latency", "p50_ms", "Pickup latency at idle, p50 (ms)", "low"),
    ("latency", "p95_ms", "Pickup latency at idle, p95 (ms)", "low"),
    ("latency", "p99_ms", "Pickup latency at idle, p99 (ms)", "low"),
    ("enqueue", "single_per_second", "Enqueue, one transaction each (tasks/s)", "high"),
    ("enqueue", "bulk_per_second", "Enqueue, one bulk call (tasks/s)", "high"),
    ("idle", "per_second", "Idle worker, commits per second", "low"),
]


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    sizes = QUICK if args.quick else FULL
    if args.rounds:
        sizes = Sizes(**{**sizes.__dict__, "rounds": args.rounds})
    if args.history is not None:
        sizes = Sizes(**{**sizes.__dict__, "history": args.history})
    runner = Runner(args, sizes)
    systems = [s for s in args.systems if runner.available(s)]
    skipped = {s: f"no interpreter at {runner.python[s]}" for s in args.systems if s not in systems}
    started = time.monotonic()
    for system in systems:
        progress(f"setting up {system}")
        runner.setup(system)
    workloads = ["enqueue", "drain", "drain_reuse", "drain_2_workers", "latency", "idle"]
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {s: {} for s in systems}
    for round_number in range(sizes.rounds):
        order = systems[round_number % len(systems) :] + systems[: round_number % len(systems)]
        if "django-pq" in systems:
            raw["django-pq"].setdefault("fork", []).append(runner.run("django-pq", "fork"))
        for workload in workloads:
            for system in order:
                if workload == "drain_2_workers" and system not in (*NON_FORKING, "django-pq"):
                    continue
                if workload == "drain_reuse" and system != "django-pq":
                    continue
                progress(f"round {round_number + 1}/{sizes.rounds}: {system} {workload}")
                try:
                    result = runner.run(system, workload)
                except (RuntimeError, subprocess.TimeoutExpired) as error:
                    progress(f"  failed: {str(error).strip()[-500:]}")
                    result = {"error": str(error)[-2000:]}
                raw[system].setdefault(workload, []).append(result)
    history = None
    if sizes.history and "django-pq" in systems:
        progress(f"django-pq drain with {sizes.history:,} finished rows in the table")
        history = runner.history(sizes.history)
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for system, by_workload in raw.items():
        summary[system] = {}
        for workload, results in by_workload.items():
            keys = {k for r in results for k, v in r.items() if isinstance(v, int | float)}
            summary[system][workload] = {
                key: summarize([r[key] for r in results if r.get(key) is not None])
                for key in sorted(keys)
                if any(r.get(key) is not None for r in results)
            }
    return {
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(args.admin_url),
        "versions": {s: runner.version(s) for s in systems},
        "sizes": sizes.__dict__,
        "djpq_worker_args": args.djpq_worker_arg,
        "skipped": skipped,
        "duration_seconds": round(time.monotonic() - started),
        "summary": summary,
        "history": history,
        "raw": raw,
    }


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the performance page -------------------------------------------------------------------


def _median(data: dict[str, Any], system: str, workload: str, key: str) -> float | None:
    figure = data["summary"].get(system, {}).get(workload, {}).get(key)
    return None if figure is None else float(figure["median"])


def _cell(data: dict[str, Any], system: str, workload: str, key: str) -> str:
    figure = data["summary"].get(system, {}).get(workload, {}).get(key)
    if figure is None:
        return "n/a"
    if data["sizes"]["rounds"] == 1:
        return _number(figure["median"])
    return f"{_number(figure['median'])} ({_number(figure['min'])}-{_number(figure['max'])})"


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(data: dict[str, Any], system: str, workload: str, key: str, better: str) -> str:
    ours, theirs = _median(data, system, workload, key), _median(data, "pq", workload, key)
    if ours is None or theirs is None or ours == 0 or theirs == 0:
        return "n/a"
    ratio = ours / theirs if better == "high" else theirs / ours
    return f"{ratio:.2f}x"


def _targets(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for django-pq's performance targets (the Targets table)."""

    def m(system: str, workload: str, key: str) -> float | None:
        return _median(data, system, workload, key)

    rows: list[tuple[str, str, str]] = []

    def add(target: str, measured: float | None, goal: float, text: str, higher: bool) -> None:
        if measured is None:
            rows.append((target, "not measured", "—"))
            return
        met = measured >= goal if higher else measured <= goal
        rows.append((target, text.format(measured), "met" if met else "**not met**"))

    drain, pq_drain = m("django-pq", "drain", "per_second"), m("pq", "drain", "per_second")
    floor = m("django-pq", "fork", "parallel_per_second")
    add("Drain ≥ 5x pq", drain / pq_drain if drain and pq_drain else None, 5, "{:.2f}x", True)
    add(
        "Drain ≥ 80% of the fork floor at concurrency 2",
        drain / floor if drain and floor else None,
        0.8,
        "{:.0%}",
        True,
    )
    p50, pq_p50 = m("django-pq", "latency", "p50_ms"), m("pq", "latency", "p50_ms")
    add("Pickup p50 < 10 ms", p50, 10, "{:.1f} ms", False)
    add(
        "Pickup p50 ≤ 1/40 of pq's",
        pq_p50 / p50 if p50 and pq_p50 else None,
        40,
        "pq's is {:.0f}x ours",
        True,
    )
    single, pq_single = (
        m("django-pq", "enqueue", "single_per_second"),
        m("pq", "enqueue", "single_per_second"),
    )
    tasksdb_single = m("django-tasks-db", "enqueue", "single_per_second")
    add(
        "Single enqueue ≥ 1.5x pq",
        single / pq_single if single and pq_single else None,
        1.5,
        "{:.2f}x",
        True,
    )
    add(
        "Single enqueue ≥ django-tasks-db",
        single / tasksdb_single if single and tasksdb_single else None,
        1.0,
        "{:.2f}x",
        True,
    )
    bulk = m("django-pq", "enqueue", "bulk_per_second")
    add(
        "enqueue_many ≥ 20x single", bulk / single if bulk and single else None, 20, "{:.1f}x", True
    )
    add("Idle worker ≤ 0.2 commits/s", m("django-pq", "idle", "per_second"), 0.2, "{:.2f}/s", False)
    reuse = m("django-pq", "drain_reuse", "per_second")
    peers = [m(peer, "drain", "per_second") for peer in NON_FORKING]
    fastest = max((p for p in peers if p), default=None)
    add(
        "--tasks-per-child drain ≥ the fastest non-forking peer (concurrency 2)",
        reuse / fastest if reuse and fastest else None,
        1.0,
        "{:.2f}x",
        True,
    )
    history = data.get("history")
    if history and drain:
        change = history["per_second"] / drain - 1
        rows.append(
            (
                f"Drain with {history['finished_rows']:,} finished rows within 10% of empty",
                f"{history['per_second']:.1f}/s ({change:+.0%})",
                "met" if abs(change) <= 0.10 or change > 0 else "**not met**",
            )
        )
    else:
        rows.append(("Drain with 1,000,000 finished rows within 10% of empty", "not measured", "—"))
    return rows


def render(data: dict[str, Any]) -> str:
    """The Markdown performance page."""
    systems = [s for s in SYSTEMS if s in data["summary"]]
    mach = data["machine"]
    lines = [
        "# Performance",
        "",
        "<!-- Generated by `python benchmarks/compare.py --write-docs`; do not edit by hand. -->",
        "",
        "django-pq keeps pq's isolation, a fresh forked process for every task, and removes "
        "the rest of pq's per-task cost: it wakes on `LISTEN/NOTIFY` instead of polling, "
        "claims and finishes in batches over one long-lived connection, and keeps the claim "
        "index partial. The fork itself is the floor; this page measures how close each "
        "system gets to it, side by side, on one machine.",
        "",
        f"Measured {data['generated']}, {data['sizes']['rounds']} round(s), systems alternating "
        f"(took {data['duration_seconds']} s). Figures are medians, with the spread "
        "(min-max over rounds) in brackets; ratios compare medians with pq 0.9.1, "
        "oriented so that above 1x is better.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPUs | {mach['cpus']} x {mach['cpu_model']} |",
        f"| Memory | {mach['memory_gb']} GB |",
        f"| OS | {mach['os']}, Linux {mach['kernel']} |",
        f"| PostgreSQL | {mach['postgres']} (local, one server; a database per system) |",
    ]
    for system in systems:
        lines.append(f"| {system} | {data['versions'].get(system, '?')} |")
    for system, why in data["skipped"].items():
        lines.append(f"| {system} | skipped: {why} |")
    lines += ["", "## Results", ""]
    columns = ["Workload", *systems, *(f"{s} vs pq" for s in systems if s != "pq")]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for workload, key, label, better in FIGURES:
        if not any(data["summary"][s].get(workload, {}).get(key) for s in systems):
            continue
        cells = [_cell(data, s, workload, key) for s in systems]
        ratios = [_ratio(data, s, workload, key, better) for s in systems if s != "pq"]
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    fork = data["summary"].get("django-pq", {}).get("fork")
    if fork:
        lines += [
            "",
            "The floor, measured in the same run from a process with django-pq's benchmark "
            "project loaded (a fork that exits at once, then `waitpid`): "
            f"{_number(fork['ms_per_fork']['median'])} ms per fork serially, "
            f"{_number(fork['serial_per_second']['median'])} forks/s serially, and "
            f"{_number(fork['parallel_per_second']['median'])} forks/s with two in flight.",
        ]
    lines += ["", "## Targets", "", "| Target | Measured | |", "|---|---|---|"]
    lines += [f"| {t} | {v} | {verdict} |" for t, v, verdict in _targets(data)]
    lines += ["", "## Where targets are missed, and what bounds them", "", GAPS.strip()]
    lines += ["", "## How it is measured", "", METHOD.strip(), ""]
    return "\n".join(lines)


#: Where targets are missed, what bounds them. Kept in words (the table has the numbers).
GAPS = """
- **Drain with a fresh fork per task.** Each task costs the worker parent a fork of a
  Django-sized process (the floor above) and one transaction that records the finished
  task and claims the next (with `synchronous_commit` on, each commit waits for a WAL
  flush). The child then runs Python in a copy of the parent, so every page it touches is
  copied (copy-on-write), and tearing that address space down at exit costs again. The
  fork+exit+wait floor contains none of that work, which is why even an empty task lands
  well below it; on this 2-CPU machine the parent, two children and PostgreSQL also share
  two cores. Worker CPU per task (in the table) against the floor's milliseconds per fork
  shows the gap directly. The opt-in `--tasks-per-child` removes the fork from most tasks
  and is the way past it: its drain row is several times pq's.
- **Single enqueue against django-tasks-db.** One `enqueue()` is one statement: an
  `INSERT … SELECT` of one row with the `NOTIFY` in the same statement, so a worker wakes
  only when the transaction commits, returning the row as a `Task` (built from the
  returned columns directly: a raw queryset cost more than the round trip). Committing a
  transaction that notified takes PostgreSQL's notification-queue lock; django-tasks-db
  writes a plain row and its workers poll, which is what its pickup latency above pays
  for. The 1.5x-pq target is met.
- **`enqueue_many()`**: one statement for the whole batch (in the table, close to
  procrastinate's `batch_defer`). What is left per task is validating and encoding each
  call in Python (`prepare()`) and building each returned `Task`. Making the single call
  faster lowered this ratio: the bulk path was already one statement.
"""

METHOD = """
- **Drain**: the tasks are written in one transaction, then the worker starts (django-pq's
  `pq_worker`; pq's `run_worker`; procrastinate's worker; django-tasks-db's
  `db_worker`). Throughput is tasks / (last finish - first start) from each system's own
  timestamps, so start-up is not in it. CPU per task is all the CPU of the worker processes
  and their children (`getrusage(RUSAGE_CHILDREN)`), start-up included, over the task count.
  pq and django-pq fork a process per task; procrastinate and django-tasks-db run tasks
  in-process, so their figures are the context, not the bar. The two-process row runs two
  worker processes of concurrency 1.
- **Pickup latency**: one task at a time to an idle, warmed-up worker, after a random pause
  of 0.05-1.05 s; from `enqueue()` returning (committed) to the task's first line, which it
  writes to a FIFO the benchmark waits on. It includes the fork for pq and django-pq.
- **Enqueue**: single-row calls in autocommit, one transaction each, with the system's own
  API; bulk is one call (`enqueue_many`, procrastinate's `batch_defer`). pq 0.9.1 and
  django-tasks-db have no bulk call.
- **Idle load**: the system's database is vacuumed first (so autovacuum has nothing to do
  in the window), one worker is warmed up and left idle for 11 s (PostgreSQL publishes an
  idle session's counts up to 10 s late), then `pg_stat_database.xact_commit` of that
  database is counted over 60 s, read through `psql` from another database so the reads do
  not count. Any other transaction in that database in the window counts too, so the figure
  is an upper bound; django-pq's own statements, logged by the server with
  `log_statement = 'all'`, are one heartbeat every 10 s (`PQ_HEARTBEAT_INTERVAL`): 0.1 per
  second.
- **History**: the django-pq drain repeated with a million finished rows in `pq_tasks`
  (inserted, then `VACUUM ANALYZE`), against the median drain of an empty table.
- Each system runs with its defaults (pq polls every second, django-tasks-db every second,
  django-pq and procrastinate listen for notifications; log levels as shipped).

## Reproduce

Use a PostgreSQL server no one else is using: every other session adds noise, above all to
the idle load. The peers' virtualenvs come from `benchmarks/setup_peers.py`.

```bash
tox -e bench                                          # everything, rewrites this page
python benchmarks/setup_peers.py --pq-venv /tmp/pq-venv --peers-venv /tmp/peers-venv
python benchmarks/compare.py --write-docs             # the same without tox
python benchmarks/compare.py --quick --systems django-pq   # a one-minute smoke run
python benchmarks/compare.py --from-json benchmarks/results.json --write-docs  # re-render only
# one workload of one system (drivers: djpq_driver.py, pq_driver.py, procrastinate_driver.py,
# tasksdb_driver.py; workloads: setup, enqueue, drain, latency, idle, fork)
DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench_djpq \\
    python benchmarks/drivers/djpq_driver.py drain --tasks 2000 --concurrency 2
# where a worker's time goes, per task and phase
DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench_djpq \\
    python benchmarks/profile_worker.py --tasks 2000 --concurrency 2
# django-pq at two revisions, taking turns (see performance-changes.md)
python benchmarks/ab.py --before <revision>
```

Changes that must not make django-pq slower are measured before and after, side by side:
see [Changes measured before and after](performance-changes.md).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round, no history")
    parser.add_argument("--rounds", type=int, help="rounds (default: 3; quick: 1)")
    parser.add_argument(
        "--history",
        type=int,
        help="finished rows for the history drain (default: 1,000,000; quick: 0 = skip)",
    )
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--pq-python", default="/tmp/pq-venv/bin/python")
    parser.add_argument("--peers-python", default="/tmp/peers-venv/bin/python")
    parser.add_argument("--djpq-python", default=sys.executable)
    parser.add_argument(
        "--djpq-worker-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="extra pq_worker flag for django-pq, e.g. --tasks-per-child=100",
    )
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--db-prefix", default="bench_", help="prefix of the databases made")
    parser.add_argument("--json", type=Path, default=HERE / "results.json")
    parser.add_argument("--write-docs", action="store_true", help=f"write {DOCS_PAGE}")
    parser.add_argument("--from-json", type=Path, help="render from saved results, no run")
    args = parser.parse_args()
    if args.from_json:
        data = json.loads(args.from_json.read_text())
    else:
        data = run_all(args)
        args.json.write_text(json.dumps(data, indent=2))
        progress(f"results in {args.json}")
    page = render(data)
    if args.write_docs:
        DOCS_PAGE.write_text(page)
        progress(f"wrote {DOCS_PAGE}")
    else:
        print(page)


if __name__ == "__main__":
    main()
