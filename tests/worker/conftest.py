"""Run the real worker as a separate process, against the test database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

REPO = Path(__file__).resolve().parents[2]
#: Debian's libfaketime (package faketime), preloaded to give a worker a wrong wall clock.
FAKETIME_LIBRARY = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")

#: Short lease and intervals so liveness tests finish in seconds.
FAST_LIVENESS = {
    "PQ_LEASE": 3.0,
    "PQ_HEARTBEAT_INTERVAL": 0.5,
    "PQ_KILL_GRACE": 0.5,
    "PQ_RETRY_DELAY": 0.05,
    "PQ_RETRY_MAX_DELAY": 0.2,
}


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, exited but not reaped, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(
    condition: Callable[[], Any], timeout: float = 30.0, message: str | Callable[[], str] = ""
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds.

    ``message`` may be a callable, read only on failure (say, a worker's log by then)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            what = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.02)


def test_database_url() -> str:
    params = connection.settings_dict
    host = params["HOST"] or "127.0.0.1"
    user = params["USER"] or "postgres"
    password = f":{params['PASSWORD']}" if params["PASSWORD"] else ""
    return f"postgresql://{user}{password}@{host}:{params['PORT'] or 5432}/{params['NAME']}"


test_database_url.__test__ = False  # type: ignore[attr-defined]


class WorkerProcess:
    """A ``manage.py pq_worker`` process with its output in a file."""

    def __init__(
        self,
        args: list[str],
        settings: dict[str, Any],
        database_url: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - open for the process's life
            prefix="pq-worker-", suffix=".log", delete=False
        )
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PYTHONPATH": str(REPO),
            "DJANGO_PQ_TEST_SETTINGS": json.dumps(settings),
            **(env or {}),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", "pq_worker", "-v", "2", *args],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker did not exit in {timeout}s:\n{self.output()}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture
def start_worker(transactional_db: None) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers with flags and setting overrides; all are killed at teardown."""
    started: list[WorkerProcess] = []
    url = test_database_url()

    def start(
        *args: str, settings: dict[str, Any] | None = None, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        worker = WorkerProcess(list(args), {**FAST_LIVENESS, **(settings or {})}, url, env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
    # Children of a SIGKILLed worker die by themselves; wait for them so the next test
    # (and the test database teardown) does not race them.
    wait_until(lambda: not _children_alive(started), 15, "orphaned task processes to exit")


def _children_alive(workers: list[WorkerProcess]) -> bool:
    parents = {worker.pid for worker in workers}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) in parents and fields[0] != "Z":
            return True
    return False


def run_burst(
    start_worker: Callable[..., WorkerProcess],
    *args: str,
    settings: dict[str, Any] | None = None,
    timeout: float = 60,
) -> WorkerProcess:
    """Run a worker with --burst to completion; assert it exited 0."""
    worker = start_worker("--burst", *args, settings=settings)
    code = worker.wait(timeout)
    assert code == 0, worker.output()
    return worker
