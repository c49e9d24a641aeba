"""Tasks for the task-policy tests: they die in a chosen way, ask to be retried, report
their own context and progress. Each run leaves a RunLog line first, so the tests count
runs even of those killed midway."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import django_pq as pq
from tests.testapp.models import RunLog


def _count_run(key: str) -> int:
    RunLog.objects.create(event="attempt", pid=os.getpid(), value=key)
    return RunLog.objects.filter(event="attempt", value=key).count()


def die(way: str, key: str, times: int = 1_000_000) -> int:
    """Die by ``way`` in each of the first ``times`` runs; then return the run number."""
    runs = _count_run(key)
    if runs > times:
        return runs
    if way == "exception":
        raise ValueError(f"run {runs} fails")
    if way == "key_error":
        raise KeyError(f"run {runs} fails")
    if way == "timeout":
        time.sleep(60)
    if way == "memory":
        return len(bytearray(4000 * 1024 * 1024))
    if way == "signal":
        os.kill(os.getpid(), signal.SIGKILL)
    if way == "worker_lost":
        os.kill(os.getppid(), signal.SIGKILL)  # the child dies with its worker
        time.sleep(60)
    raise AssertionError(f"unknown way {way!r}")


@pq.task(queue="policies", retry=pq.Retry(3, on=["exception"], delay=0, jitter=0))
def declared_flaky(key: str, times: int) -> int:
    """Declared with a retry policy: fails ``times`` runs, then returns the run number."""
    runs = _count_run(key)
    if runs <= times:
        raise ValueError(f"run {runs} fails")
    return runs


@pq.task
def declared_plain(value: int) -> int:
    return value


def retry_later(key: str, times: int, count_attempt: bool = True) -> int:
    """Ask to run again (at once) in each of the first ``times`` runs."""
    runs = _count_run(key)
    if runs <= times:
        raise pq.RetryLater(delay=0, reason=f"not yet ({runs})", count_attempt=count_attempt)
    return runs


def _context_json() -> str:
    context = pq.current_task()
    assert context is not None
    fields: dict[str, Any] = {
        name: getattr(context, name)
        for name in ("id", "name", "attempt", "max_attempts", "queue", "priority")
    }
    fields.update(
        client_id=context.client_id,
        periodic_id=context.periodic_id,
        slot=None if context.slot is None else context.slot.isoformat(),
        deadline=None if context.deadline is None else context.deadline.timestamp(),
        now=time.time(),
        pid=os.getpid(),
    )
    return json.dumps(fields)


def record_context(key: str, fail_first: bool = False) -> str:
    """Record what pq.current_task() says, optionally failing the first run."""
    runs = _count_run(key)
    RunLog.objects.create(event="context", pid=os.getpid(), value=_context_json())
    if fail_first and runs == 1:
        raise ValueError("first run fails")
    return key


async def record_context_async(key: str) -> str:
    await asyncio.sleep(0)
    value = _context_json()
    await RunLog.objects.acreate(event="context", pid=os.getpid(), value=value)
    return key


def report_progress(steps: int, release: str) -> int:
    """Report each step, then wait (still running) until ``release`` exists."""
    for done in range(1, steps + 1):
        pq.set_progress(done, steps, f"step {done}")
    deadline = time.monotonic() + 60
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return steps


def retry_later_by(seconds: float) -> None:
    raise pq.RetryLater(delay=seconds, reason="come back later")


def count_progress_writes(steps: int) -> tuple[int, float]:
    """Report ``steps`` steps as fast as it can; return how many writes the context made
    (its writer, wrapped to count) and the seconds the loop took."""
    context = pq.current_task()
    assert context is not None
    writer = context._writer
    calls = 0

    def counting(value: dict[str, object]) -> bool:
        nonlocal calls
        calls += 1
        assert writer is not None
        return writer(value)

    context._writer = counting
    started = time.monotonic()
    for done in range(1, steps + 1):
        pq.set_progress(done, steps)
    return calls, time.monotonic() - started


def bad_progress(args: list[Any]) -> None:
    pq.set_progress(*args)


def soft_limited(mode: str, key: str) -> str:
    """Run past the soft limit: ``catch`` cleans up and returns, ``ignore`` lets the
    exception end the run, ``outstay`` catches it and keeps running into the hard limit."""
    _count_run(key)
    try:
        time.sleep(30)
    except pq.TimeLimitExceeded:
        RunLog.objects.create(event="soft limit", pid=os.getpid(), value=key)
        if mode == "ignore":
            raise
        if mode == "outstay":
            time.sleep(30)
        return "cleaned up"
    return "slept"


def progress_in_steps(folder: str, steps: int) -> int:
    """Report step n, then wait for ``folder/n`` before the next: a test sets the pace."""
    for done in range(1, steps + 1):
        pq.set_progress(done, steps, f"step {done} of {steps}")
        gate = Path(folder) / str(done)
        deadline = time.monotonic() + 60
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    return steps


def _customer_key(customer_id: Any) -> Any:
    # None: no key; "" comes back as "" (an invalid key), for the tests of bad keys.
    return customer_id and f"customer:{customer_id}"


@pq.task(limit_key=_customer_key)
def sync_customer(customer_id: Any) -> Any:
    """One customer's sync: its flow key comes from its argument."""
    return customer_id
