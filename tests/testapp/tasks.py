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
