"""What a newcomer's first test run does to their machine: it leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from django.db import connection

from devdb import ThrowawayPostgres
from tests.worker.conftest import wait_until

REPO = Path(__file__).resolve().parents[1]

#: A worker test (worker logs) and a browser test (Chromium's profile and temp dirs).
LEAKY_BEFORE = [
    "tests/worker/test_outcomes.py::test_committed_tasks_run_once_and_rolled_back_ones_never",
    "tests/admin/test_browser.py::test_retry_a_failed_task",
]


def test_a_run_leaves_nothing_in_tmpdir() -> None:
    params = connection.settings_dict
    # A database of its own: this run's test database is in use.
    url = (
        f"postgresql://{params['USER'] or 'postgres'}@{params['HOST'] or '127.0.0.1'}:"
        f"{params['PORT'] or 5432}/{params['NAME']}_tmpdir"
    )
    # Short, in /tmp itself: Chromium's socket path in it must stay under 108 characters.
    tmpdir = Path(tempfile.mkdtemp(prefix="pq-", dir="/tmp"))
    try:
        left = run_and_list(tmpdir, url)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    assert left == []


def run_and_list(tmpdir: Path, url: str) -> list[str]:
    """Run the tests that used to leave files, with ``tmpdir`` as ``$TMPDIR``; list it."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *LEAKY_BEFORE],
        cwd=REPO,
        env={
            # Without tox's suffix for this run's test database: the name is new already.
            **{key: value for key, value in os.environ.items() if key != "TOX_PARALLEL_ENV"},
            "TMPDIR": str(tmpdir),
            "DATABASE_URL": url,
            "PYTHONPATH": str(REPO),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return sorted(path.name for path in tmpdir.iterdir())


def test_the_throwaway_clusters_watcher_is_not_measured_by_coverage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It outlives the test run; measured, it wrote its coverage data while (or after) the
    run's data was combined: "isn't a coverage data file" warnings, and stray files."""
    monkeypatch.setenv("COVERAGE_PROCESS_CONFIG", "{}")
    owner = subprocess.Popen(["sleep", "60"])
    cluster = ThrowawayPostgres.__new__(ThrowawayPostgres)
    cluster.bin_dir, cluster.root, cluster._as_user = tmp_path / "bin", tmp_path / "root", []
    try:
        cluster.destroy_when_gone(owner.pid)
        [watcher] = wait_until(lambda: _processes_naming(str(cluster.root)), 30, "the watcher")
        environ = Path(f"/proc/{watcher}/environ").read_bytes().split(b"\0")
        assert not [entry for entry in environ if entry.startswith(b"COVERAGE_PROCESS_")]
    finally:
        owner.kill()
        owner.wait()
        for pid in _processes_naming(str(cluster.root)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found
