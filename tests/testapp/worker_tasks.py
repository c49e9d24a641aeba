"""Tasks the worker tests use to attack the worker parent: its connection, its process
group, its descendants."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from django.db import connection

from tests.testapp.models import RunLog


def kill_worker_connection(label: str) -> str:
    """Terminate the worker parent's database session and return at once, so the outcome
    reaches the parent while its connection is gone."""
    RunLog.objects.create(event="start", pid=os.getpid(), value=label)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [f"pq_worker:{os.getppid()}"],
        )
    return label


def leave_group_and_sleep(seconds: float, marker: str) -> None:
    """Leave the process group the worker kills, then outstay max_runtime.

    The child leads its own group already; it leaves it by joining its parent's group
    (same session, so allowed), which leaves its own group empty.
    """
    os.setpgid(0, os.getpgid(os.getppid()))
    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)


def _spawn_hidden(marker: str, double_fork: bool) -> int:
    """A grandchild in a session of its own (setsid), or orphaned by a double fork."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)", marker]
    if double_fork:
        code = (
            "import subprocess, sys; "
            "d = subprocess.DEVNULL; p = subprocess.Popen(sys.argv[1:], "
            "start_new_session=True, stdin=d, stdout=d, stderr=d); print(p.pid)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, *sleeper], capture_output=True, text=True, check=True
        )
        pid = int(out.stdout.strip())
    else:
        pid = subprocess.Popen(
            sleeper,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ).pid
    Path(marker).write_text(str(pid))
    return pid


def hide_grandchild(marker: str, seconds: float = 0.0, double_fork: bool = False) -> int:
    """Start a hidden grandchild that sleeps for ten minutes; run on ``seconds``; return."""
    pid = _spawn_hidden(marker, double_fork)
    if seconds:
        time.sleep(seconds)
    return pid
