"""What a newcomer's first test run does to their machine: it leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from django.db import connection

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
