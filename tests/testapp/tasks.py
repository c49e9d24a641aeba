"""Task functions used by the test suite, including ones that misbehave on purpose."""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import sys
import time
from pathlib import Path

from tests.testapp.models import RunLog


def add(a: int, b: int) -> int:
    return a + b


def echo(*args: object, **kwargs: object) -> dict[str, object]:
    return {"args": list(args), "kwargs": kwargs}


def noop() -> None:
    return None


async def async_add(a: int, b: int) -> int:
    return a + b


def pid() -> int:
    return os.getpid()


def log_run(label: str = "") -> int:
    """Record this run in the ledger; returns the pid."""
    RunLog.objects.create(event="run", pid=os.getpid(), value=label)
    return os.getpid()


def record_queries(count: int) -> int:
    for _ in range(count):
        RunLog.objects.filter(event="nothing").exists()
    RunLog.objects.create(event="queries", pid=os.getpid(), value=str(count))
    return count


def sleep(seconds: float, label: str = "") -> str:
    RunLog.objects.create(event="start", pid=os.getpid(), value=label)
    time.sleep(seconds)
    RunLog.objects.create(event="end", pid=os.getpid(), value=label)
    return label


def wait_for_file(path: str, label: str = "", timeout: float = 30) -> str:
    """Run until `path` exists: lets a test act while the task is certainly running."""
    RunLog.objects.create(event="start", pid=os.getpid(), value=label)
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    return label


def fail_until(attempt_to_succeed: int, key: str) -> int:
    """Fails until it has been run `attempt_to_succeed` times (counted in the ledger)."""
    RunLog.objects.create(event="attempt", pid=os.getpid(), value=key)
    runs = RunLog.objects.filter(event="attempt", value=key).count()
    if runs < attempt_to_succeed:
        raise RuntimeError(f"failing run {runs}")
    return runs


def raise_error() -> None:
    raise ValueError("this task always fails")


def call_sys_exit() -> None:
    sys.exit(3)


def raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def segfault() -> None:
    ctypes.string_at(0)


def abort() -> None:
    os.abort()


def exit_hard() -> None:
    os._exit(7)


def hog_memory(megabytes: int) -> int:
    """Grow in steps, so the parent's resident-size check sees it climb."""
    chunks = []
    for _ in range(megabytes // 10):
        chunks.append(b"x" * (10 * 1024 * 1024))
        time.sleep(0.02)
    return len(chunks)


def allocate_at_once(megabytes: int) -> int:
    return len(bytearray(megabytes * 1024 * 1024))


def ignore_sigterm_and_sleep(seconds: float) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    RunLog.objects.create(event="start", pid=os.getpid(), value="stubborn")
    time.sleep(seconds)


def long_c_call() -> bytes:
    RunLog.objects.create(event="start", pid=os.getpid(), value="c-call")
    return hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 2**31 - 1)


def huge_error() -> None:
    raise ValueError("x\x00" * 200_000)


class Greeter:
    def greet(self, name: str) -> str:
        return f"hello {name}"


def make_closure() -> object:
    def inner() -> None:
        return None

    return inner


# -- the fault suite (tests/faults) ------------------------------------------------------

_current_run: object = None


def _remember_run(sender: object, task: object, **kwargs: object) -> None:
    """Keep the run this child executes, so ``ledger`` knows its task id."""
    global _current_run
    _current_run = task


from django_pq.signals import task_started  # noqa: E402

task_started.connect(_remember_run, dispatch_uid="tests.testapp.tasks._remember_run")


def _ledger_write(event: str, key: str) -> None:
    from django.db import connection

    from tests.testapp.models import FaultLedger

    task_id = getattr(_current_run, "id", None)
    table = FaultLedger._meta.db_table
    with connection.cursor() as cursor:
        # The token is read from the row as it is now: the claim's, unless it was reaped.
        cursor.execute(
            f"INSERT INTO {table} (task_id, run_token, attempt, event, pid, key, at) "
            "SELECT %s, t.run_token, t.attempts, %s, %s, %s, clock_timestamp() "
            "FROM (SELECT 1) AS one LEFT JOIN pq_tasks t ON t.id = %s AND t.status = 'running'",
            [task_id, event, os.getpid(), key, task_id],
        )


def ledger(seconds: float = 0.0, key: str = "") -> str:
    """A task that records its start and end in the fault ledger, sleeping in between."""
    _ledger_write("start", key)
    if seconds:
        time.sleep(seconds)
    _ledger_write("end", key)
    return key


def error_with_nul_bytes() -> None:
    raise ValueError("before\x00after\x00" * 3)


def error_with_lone_surrogate() -> None:
    # A str Python holds but UTF-8 cannot encode (say, a file name decoded with
    # surrogateescape): it must reach the row, escaped, not stop the worker.
    raise ValueError("bad name \udcff")


def fork_and_return_in_both() -> str:
    # A task's bug: the forked copy returns from the task instead of calling os._exit.
    # It returns first, so its report would come first.
    pid = os.fork()
    if pid == 0:
        return "the copy"
    os.waitpid(pid, 0)
    return "the task"


def ten_megabytes_of_error() -> None:
    raise ValueError("e" * (10 * 1024 * 1024))


def print_to_stdout(megabytes: int) -> int:
    line = "o" * 1023 + "\n"
    for _ in range(megabytes * 1024):
        sys.stdout.write(line)
    sys.stdout.flush()
    return megabytes


def leave_grandchild(marker: str, seconds: float = 0.0) -> int:
    """Start a grandchild in the task's process group, then return (or run on)."""
    import subprocess

    grandchild = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", marker],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    Path(marker).write_text(str(grandchild.pid))
    if seconds:
        time.sleep(seconds)
    return grandchild.pid


_LEAKED: list[bytes] = []


def leak(megabytes: int) -> int:
    """Keep memory after returning, as a leaky task would (matters for reused children)."""
    _LEAKED.append(b"x" * (megabytes * 1024 * 1024))
    return os.getpid()


def report_batch(key: str = "") -> dict[str, object]:
    """A batch callback: what pq.current_task().batch says, recorded in the ledger too."""
    from django_pq.context import current_task

    _ledger_write("start", key)
    found = current_task()
    batch = found.batch if found is not None else None
    _ledger_write("end", key)
    if batch is None:
        return {"batch": None}
    return {
        "batch": batch.id,
        "counts": batch.counts,
        "results": len(batch.results()),
        "members": len(batch.tasks),
    }
