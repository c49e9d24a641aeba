"""The fault suite's machinery: real workers, a run ledger, and its invariants (reliability.md).

Every scenario starts real ``pq_worker`` processes (``Fleet``), does something nasty to
them or to the database, waits until the system is quiet, and then calls
``check_invariants``, which reads the task rows and the run ledger (``FaultLedger``,
written by ``tests.testapp.tasks.ledger`` through the child's own autocommit connection).

Scale: ``DJANGO_PQ_FAULT_SCALE`` is the fraction of the full sizes (scale 1) the load
scenarios use (1: 8 workers on 10,000 tasks while 2 producers add 10,000 each). The
default, 0.03, keeps the whole suite within about eight minutes on a 2-core machine.
Set ``DJANGO_PQ_FAULT_FIGURES=path.json`` to keep the run's figures (the reliability page
quotes them).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devdb import ThrowawayPostgres
from django_pq.models import ErrorCode
from tests.conftest import skip_or_fail
from tests.worker.conftest import (
    FAKETIME_LIBRARY,
    FAST_LIVENESS,
    REPO,
    test_database_url,
    wait_until,
)

SCALE = float(os.environ.get("DJANGO_PQ_FAULT_SCALE", "0.03"))
LEDGER_TASK = "tests.testapp.tasks:ledger"
LEDGER_TABLE = "testapp_faultledger"
MARKER_VARIABLE = "DJANGO_PQ_FAULT_MARKER"
#: How long after its worker died a row may still be ``running`` (delivery.md), plus slack
#: for a machine busy with other test runs.
REAP_BOUND = FAST_LIVENESS["PQ_LEASE"] + FAST_LIVENESS["PQ_HEARTBEAT_INTERVAL"]

#: Everything the suite did to the system, summed over the session (the report's figures).
FIGURES: Counter[str] = Counter()


def scaled(full_size: int, minimum: int = 1) -> int:
    """``full_size`` (its figure at scale 1) at this run's scale, at least ``minimum``."""
    return max(minimum, round(full_size * SCALE))


# -- database targets -------------------------------------------------------------------


@dataclass
class Target:
    """A database the workers and the checks share: pytest-django's, or a private cluster."""

    url: str
    cluster: ThrowawayPostgres | None = None

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=10)

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with contextlib.closing(self.connect()) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture
def test_db(transactional_db: None) -> Target:
    """The test database, committed writes visible to workers; flushed after the test."""
    return Target(test_database_url())


def _django_env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(REPO),
    }


@pytest.fixture(scope="module")
def private_cluster() -> Iterator[Target]:
    """A PostgreSQL of our own, migrated, which tests may stop and restart at will."""
    cluster = ThrowawayPostgres()
    cluster.start()
    cluster.destroy_when_gone(os.getpid())
    url = cluster.url
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--noinput", "-v", "0"],
        cwd=REPO,
        env=_django_env(url),
        check=True,
        timeout=180,
    )
    try:
        yield Target(url, cluster)
    finally:
        cluster.destroy()


@pytest.fixture
def private_db(private_cluster: Target) -> Iterator[Target]:
    """The private cluster, running and empty at the start of each test."""
    cluster = private_cluster.cluster
    assert cluster is not None
    if not cluster.is_running():
        cluster.start()
    private_cluster.query(
        f"TRUNCATE pq_tasks, pq_periodic, pq_workers, {LEDGER_TABLE} RESTART IDENTITY CASCADE"
    )
    yield private_cluster
    if not cluster.is_running():
        cluster.start()


# -- workers ----------------------------------------------------------------------------


class FaultWorker:
    """One ``pq_worker`` process. Every process it (or its children) starts carries the
    fleet's marker in its environment, so none can hide after the test."""

    def __init__(
        self,
        target: Target,
        args: list[str],
        settings: dict[str, Any],
        marker: str,
        extra_env: dict[str, str],
    ) -> None:
        self.args = args
        self.log_path = Path(tempfile.mkstemp(prefix="pq-fault-worker-", suffix=".log")[1])
        env = {
            **_django_env(target.url),
            "DJANGO_PQ_TEST_SETTINGS": json.dumps({**FAST_LIVENESS, **settings}),
            MARKER_VARIABLE: marker,
            **extra_env,
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "django", "pq_worker", *args],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        FIGURES["workers started"] += 1

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def kill(self, *, as_fault: bool = True) -> None:
        """SIGKILL the parent (its children die with it: PDEATHSIG and the watchdog)."""
        if self.is_alive():
            self.send(signal.SIGCONT)
            self.send(signal.SIGKILL)
            self.process.wait(30)
            if as_fault:
                FIGURES["workers kill -9ed mid-run"] += 1

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker did not exit in {timeout}s:\n{self.tail()}") from None

    def tail(self, chars: int = 4000) -> str:
        return self.output()[-chars:]


def marked_processes(marker: str) -> list[int]:
    """Pids of live (non-zombie) processes whose environment carries ``marker``."""
    needle = f"{MARKER_VARIABLE}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.append(int(entry.name))
    return found


class Fleet:
    """The workers of one test."""

    def __init__(self) -> None:
        self.marker = uuid.uuid4().hex
        self.workers: list[FaultWorker] = []

    def start(
        self,
        target: Target,
        *args: str,
        settings: dict[str, Any] | None = None,
        crash_at: str | None = None,
        faketime: str | None = None,
        env: dict[str, str] | None = None,
    ) -> FaultWorker:
        extra = dict(env or {})
        if crash_at:
            extra["DJANGO_PQ_CRASH_AT"] = crash_at
        if faketime:
            if not FAKETIME_LIBRARY.exists():
                skip_or_fail(
                    f"libfaketime is missing ({FAKETIME_LIBRARY}): apt-get install faketime"
                )
            extra.update(LD_PRELOAD=str(FAKETIME_LIBRARY), FAKETIME=faketime)
        worker = FaultWorker(target, list(args), settings or {}, self.marker, extra)
        self.workers.append(worker)
        return worker

    def live(self) -> list[FaultWorker]:
        return [worker for worker in self.workers if worker.is_alive()]

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.kill(as_fault=False)

    def assert_nothing_left_behind(self, timeout: float = 15.0) -> None:
        """No process of a dead worker is left: not its children, not their children."""
        live_parents = {worker.pid for worker in self.live()}
        try:
            wait_until(
                lambda: not (set(marked_processes(self.marker)) - live_parents),
                timeout,
                "every process of the dead workers to be gone",
            )
        except AssertionError:
            leftovers = sorted(set(marked_processes(self.marker)) - live_parents)
            raise AssertionError(
                f"processes of dead workers left behind: {describe_processes(leftovers)}"
            ) from None


def describe_processes(pids: list[int]) -> str:
    described = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            cmdline = "?"
        described.append(f"{pid} ({cmdline.strip()[:100]})")
    return ", ".join(described)


def kill_marked(marker: str) -> None:
    for pid in marked_processes(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    """Start workers; at teardown all are killed and nothing of theirs may survive."""
    workers = Fleet()
    yield workers
    workers.stop_all()
    try:
        workers.assert_nothing_left_behind()
    finally:
        kill_marked(workers.marker)


# -- producing work ---------------------------------------------------------------------


def enqueue_ledger_tasks(
    target: Target, count: int, *, seconds: float = 0.0, max_attempts: int = 1, key: str = ""
) -> list[int]:
    """Insert ``count`` ledger tasks in one statement (raw SQL: works on any target)."""
    payload = json.dumps({"args": [seconds], "kwargs": {"key": key}})
    rows = target.query(
        """INSERT INTO pq_tasks (queue, name, payload, priority, run_at, max_attempts,
                                 status, attempts, error, error_code, is_cancel_requested)
           SELECT 'default', %s, %s::jsonb, 50, now(), %s, 'pending', 0, '', '', false
           FROM generate_series(1, %s)
           RETURNING id""",
        [LEDGER_TASK, payload, max_attempts, count],
    )
    target.query("SELECT pg_notify('django_pq', 't:0:default')")
    FIGURES["tasks enqueued"] += count
    return sorted(row[0] for row in rows)


def run_helper(target: Target, *args: str, marker: str = "") -> subprocess.Popen[bytes]:
    """Start ``python -m tests.faults.actors ...`` (producers, staff) against ``target``.

    Its output goes to files, never a pipe: a producer of 10,000 tasks prints more ids than
    a pipe holds, and would block on its last line until someone reads it, while a test
    waits for it to exit (the full-size chaos race did, until its deadline)."""
    env = _django_env(target.url)
    if marker:
        env[MARKER_VARIABLE] = marker
    out = tempfile.TemporaryFile()  # noqa: SIM115 - read and closed by helper_output
    err = tempfile.TemporaryFile()  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.actors", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=err,
    )
    process.output_files = (out, err)  # type: ignore[attr-defined]
    return process


def helper_output(process: subprocess.Popen[bytes], timeout: float = 600) -> tuple[bytes, bytes]:
    """Wait for a :func:`run_helper` process; its stdout and stderr."""
    process.wait(timeout)
    texts = []
    for file in process.output_files:  # type: ignore[attr-defined]
        file.seek(0)
        texts.append(file.read())
        file.close()
    return texts[0], texts[1]


def finish_helper(process: subprocess.Popen[bytes], timeout: float = 600) -> dict[str, Any]:
    out, err = helper_output(process, timeout)
    assert process.returncode == 0, err.decode(errors="replace")[-4000:]
    return json.loads(out.decode().strip().splitlines()[-1])


# -- quiet and invariants ---------------------------------------------------------------


def unfinished(target: Target) -> tuple[int, int]:
    """(running rows, pending rows due within a minute: retries waiting out their delay)."""
    [(running, due)] = target.query(
        """SELECT count(*) FILTER (WHERE status = 'running'),
                  count(*) FILTER (WHERE status = 'pending'
                                   AND run_at <= now() + interval '1 minute')
           FROM pq_tasks"""
    )
    return running, due


def wait_until_quiet(target: Target, timeout: float, fleet: Fleet | None = None) -> None:
    """Wait until nothing runs and nothing due waits (a live worker must be there to do it)."""
    try:
        wait_until(lambda: unfinished(target) == (0, 0), timeout, "the system to be quiet")
    except AssertionError:
        running, due = unfinished(target)
        logs = "\n".join(w.tail(1500) for w in (fleet.workers[-2:] if fleet else []))
        raise AssertionError(
            f"not quiet after {timeout}s: {running} running, {due} due\n{logs}"
        ) from None


@dataclass
class Verdict:
    """What ``check_invariants`` found; the scenario asserts on more where it promises more."""

    tasks: int
    statuses: Counter[str]
    error_codes: Counter[str]
    runs: int
    tasks_run_more_than_once: int
    violations: list[str] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    duplicated: int = 0  #: runs beyond those allowed
    stuck: int = 0  #: rows still running for a worker whose lease lapsed past the bound


def check_invariants(
    target: Target,
    *,
    runs_allowed: dict[int, int] | None = None,
    expected_ids: list[int] | None = None,
) -> Verdict:
    """Assert the promises of reliability.md (see ``judge``), counting the suite's figures."""
    verdict = judge(target, runs_allowed=runs_allowed, expected_ids=expected_ids)
    FIGURES["invariant checks"] += 1
    FIGURES["runs recorded"] += verdict.runs
    FIGURES["tasks lost"] += len(verdict.lost)
    FIGURES["runs duplicated"] += verdict.duplicated
    assert not verdict.violations, "invariants broken:\n" + "\n".join(verdict.violations[:50])
    return verdict


def judge(
    target: Target,
    *,
    runs_allowed: dict[int, int] | None = None,
    expected_ids: list[int] | None = None,
) -> Verdict:
    """The promises of reliability.md as read from the rows and the ledger, once quiet.

    - no row ``running`` whose worker's lease lapsed more than the reap bound ago;
    - at most one run per task (``max_attempts`` for retrying tasks, or ``runs_allowed``);
    - every completed ledger task has exactly one finished run, and it is the run whose
      token the row holds;
    - every failed row has an ``error_code`` from the vocabulary and a message; every
      cancelled row says ``cancelled``, or ``dependency_failed`` when a task it waits for
      failed or was cancelled;
    - at most one task, and at most one run, per (schedule, slot);
    - none of ``expected_ids`` is lost.
    Returns the verdict with every violation listed (``check_invariants`` asserts none).
    """
    violations: list[str] = []
    stale = target.query(
        """SELECT t.id, t.worker_id FROM pq_tasks t LEFT JOIN pq_workers w ON w.id = t.worker_id
           WHERE t.status = 'running' AND (w.id IS NULL OR w.stopped_at IS NOT NULL
                 OR w.lease_expires_at < now() - make_interval(secs => %s))""",
        [REAP_BOUND + 2],
    )
    violations += [f"task {tid} still running for dead worker {wid}" for tid, wid in stale]

    rows = target.query(
        f"""SELECT t.id, t.status, t.max_attempts, t.error_code, t.error, t.run_token::text,
                   t.name,
                   count(l.*) FILTER (WHERE l.event = 'start'),
                   count(l.*) FILTER (WHERE l.event = 'end'),
                   count(l.*) FILTER (WHERE l.event = 'end' AND l.run_token = t.run_token)
            FROM pq_tasks t LEFT JOIN {LEDGER_TABLE} l ON l.task_id = t.id
            GROUP BY t.id ORDER BY t.id"""
    )
    # dependency_failed is the code of a task cancelled because one it waited for failed
    # or was cancelled: right only for a task that waits for such a one.
    waited_badly = {
        task_id
        for (task_id,) in target.query(
            """SELECT DISTINCT e.task_id FROM pq_dependencies e
               JOIN pq_tasks x ON x.id = e.depends_on_id
               WHERE x.status IN ('failed', 'cancelled')"""
        )
    }
    vocabulary = set(ErrorCode.values)
    statuses: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    runs = more_than_once = duplicated = 0
    for task_id, status, max_attempts, code, error, _token, name, starts, ends, own_ends in rows:
        statuses[status] += 1
        runs += starts
        more_than_once += starts > 1
        allowed = (runs_allowed or {}).get(task_id, max_attempts)
        if starts > allowed:
            duplicated += starts - allowed
            violations.append(f"task {task_id} ran {starts} times (allowed {allowed})")
        if status == "completed" and name == LEDGER_TASK and own_ends != 1:
            violations.append(
                f"completed task {task_id} has {own_ends} finished runs with its token "
                f"({ends} ends in all)"
            )
        if status == "failed":
            codes[code] += 1
            if code not in vocabulary or not error:
                violations.append(f"failed task {task_id}: error_code {code!r}, error {error!r}")
        justified = code == "dependency_failed" and task_id in waited_badly
        if status == "cancelled" and code != "cancelled" and not justified:
            violations.append(f"cancelled task {task_id} has error_code {code!r}")

    doubles = target.query(
        """SELECT periodic_id, slot, count(*) FROM pq_tasks WHERE periodic_id IS NOT NULL
           GROUP BY periodic_id, slot HAVING count(*) > 1"""
    )
    violations += [f"schedule {p} fired slot {s} {n} times" for p, s, n in doubles]
    double_runs = target.query(
        f"""SELECT t.periodic_id, t.slot, count(*) FROM pq_tasks t
            JOIN {LEDGER_TABLE} l ON l.task_id = t.id AND l.event = 'start'
            WHERE t.periodic_id IS NOT NULL AND t.max_attempts = 1
            GROUP BY t.periodic_id, t.slot HAVING count(*) > 1"""
    )
    violations += [f"schedule {p} ran slot {s} {n} times" for p, s, n in double_runs]

    lost: list[int] = []
    if expected_ids is not None:
        present = {row[0] for row in rows}
        lost = sorted(set(expected_ids) - present)
        if lost:
            violations.append(f"{len(lost)} tasks lost, e.g. {lost[:10]}")

    return Verdict(
        len(rows), statuses, codes, runs, more_than_once, violations, lost, duplicated, len(stale)
    )


def ledger_runs(target: Target, task_id: int) -> list[tuple[str, str | None, int, Any]]:
    """(event, run_token, pid, at) of one task, in time order."""
    return target.query(
        f"SELECT event, run_token::text, pid, at FROM {LEDGER_TABLE} "
        "WHERE task_id = %s ORDER BY at, id",
        [task_id],
    )


def registered_worker(target: Target, worker: FaultWorker, timeout: float = 60) -> str:
    rows = wait_until(
        lambda: target.query(
            "SELECT id::text FROM pq_workers WHERE pid = %s AND stopped_at IS NULL", [worker.pid]
        ),
        timeout,
        f"worker {worker.pid} to register",
    )
    return str(rows[0][0])


# -- the figures ------------------------------------------------------------------------


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("fault suite figures")
    for name, value in sorted(FIGURES.items()):
        terminalreporter.write_line(f"{name}: {value}")
    path = os.environ.get("DJANGO_PQ_FAULT_FIGURES")
    if path:
        Path(path).write_text(json.dumps({"scale": SCALE, **FIGURES}, indent=2, sort_keys=True))


def schedule_ledger(
    target: Target, every: float, *, seconds: float = 0.0, max_concurrent: int | None = 1
) -> int:
    """A schedule firing the ledger task every ``every`` seconds (raw SQL: any target)."""
    [(periodic_id,)] = target.query(
        """INSERT INTO pq_periodic (name, key, payload, priority, queue, run_every, cron,
               timezone, next_run, max_concurrent, active, skipped_runs, is_declared,
               created_at, updated_at)
           VALUES (%s, %s, %s::jsonb, 50, 'default', make_interval(secs => %s), NULL, 'UTC',
                   now(), %s, true, 0, false, now(), now())
           RETURNING id""",
        [
            LEDGER_TASK,
            uuid.uuid4().hex,
            json.dumps({"args": [seconds], "kwargs": {"key": "periodic"}}),
            every,
            max_concurrent,
        ],
    )
    target.query("SELECT pg_notify('django_pq', 's:')")
    return int(periodic_id)


def postgres_log_problems(target: Target) -> list[str]:
    """Deadlocks and serialization failures in a private cluster's server log."""
    if target.cluster is None or not target.cluster.log_file.exists():
        return []
    lines = target.cluster.log_file.read_text(errors="replace").splitlines()
    return [line for line in lines if "deadlock" in line or "could not serialize" in line]
