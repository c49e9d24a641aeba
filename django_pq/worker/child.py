"""The forked child: runs its task (or, reused, a few in turn), reports each through a pipe
as one :class:`~django_pq.worker.report.Report` line, and always ``os._exit``s.

Nothing the task does (raise, ``sys.exit``, ``KeyboardInterrupt``, crash) can return control
into the parent's loop, which this process is a copy of.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import ctypes
import dataclasses
import inspect
import json
import logging
import math
import mmap
import os
import random
import resource
import signal
import struct
import sys
import time
import traceback
from typing import Any, NoReturn

from django.db import close_old_connections, connections

from django_pq import signals
from django_pq.codec import decode_payload, encode_value
from django_pq.conf import pq_settings
from django_pq.context import ProgressWriter, from_claim, running
from django_pq.declared_tasks import is_declared
from django_pq.dependencies import batch_of
from django_pq.exceptions import NotATaskFunction, PayloadError, TimeLimitExceeded
from django_pq.retry_policy import RetryLater, exception_name
from django_pq.store.worker import Claimed
from django_pq.task_paths import _unwrap_task_object, resolve
from django_pq.worker.progress import OwnConnectionWriter
from django_pq.worker.report import Report

logger = logging.getLogger("django_pq.worker")

# Connections inherited from the parent. Closing them would speak on the parent's sockets
# (a Terminate message ends the parent's session), and letting them be garbage-collected
# does the same, so the child keeps them referenced until os._exit.
_INHERITED: list[Any] = []

_PR_SET_PDEATHSIG = 1


class LeaseClock:
    """A deadline shared between the parent and its children through anonymous memory.

    The parent moves it forward each time it renews its lease; a child whose parent is
    frozen or cut off from the database sees it pass and kills itself before the lease
    lapses and another worker may re-run the task.
    """

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, 8)  # MAP_SHARED: children see the parent's writes
        self.set(float("inf"))

    def set(self, monotonic_deadline: float) -> None:
        self._memory[:8] = struct.pack("d", monotonic_deadline)

    def get(self) -> float:
        return float(struct.unpack("d", self._memory[:8])[0])


def _detach_inherited_connections() -> None:
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None:
            _INHERITED.append(conn.connection)
            conn.connection = None
        conn.in_atomic_block = False
        conn.savepoint_ids = []
        conn.needs_rollback = False


def _load_libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


# Loaded once in the parent at import, not in every child.
_LIBC = _load_libc()


def _die_with_parent(parent_pid: int) -> None:
    with contextlib.suppress(AttributeError):  # not Linux: the watchdog still covers it
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _watchdog(parent_pid: int, lease: LeaseClock) -> None:
    """Kill this child's process group when the parent is gone or its lease is about to lapse."""
    while True:
        time.sleep(0.2)
        if os.getppid() != parent_pid or time.monotonic() > lease.get():
            os.killpg(0, signal.SIGKILL)


def _limit_memory(max_memory_mb: float | None) -> None:
    """Cap the address space as a backstop to the parent's RSS check: a sudden huge
    allocation fails with MemoryError here instead of pushing the machine into the OOM
    killer. The cap sits the limit above what the child already maps."""
    if max_memory_mb is None:
        return
    with open("/proc/self/statm") as statm:
        mapped = int(statm.read().split()[0]) * resource.getpagesize()
    limit = mapped + max_memory_mb * 1024 * 1024
    # Never above the hard limit the worker was started under: raising it is refused.
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if limit >= 2**63:  # no cap this large fits (say, inf): the parent's RSS check holds
        return
    resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))


def _prepare_process(parent_pid: int, lease: LeaseClock, max_memory_mb: float | None) -> None:
    os.setpgid(0, 0)  # its own group, so the parent can kill whatever the task spawns
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    _die_with_parent(parent_pid)
    random.seed()  # the parent's random state would repeat in every child
    _detach_inherited_connections()
    # The low-level start: threading.Thread.start() waits for the thread to run, which
    # costs milliseconds per task.
    _thread.start_new_thread(_watchdog, (parent_pid, lease))
    _limit_memory(max_memory_mb)


def _send_hook(hook: Any, errors: list[str], **kwargs: Any) -> None:
    for receiver, response in hook.send_robust(**kwargs):
        if isinstance(response, Exception):
            name = getattr(receiver, "__qualname__", repr(receiver))
            text = "".join(traceback.format_exception(response))
            logger.error("Hook %s raised in task %s", name, kwargs["task"].id, exc_info=response)
            errors.append(f"Hook {name} raised:\n{text}")


def _call(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(func):
        return asyncio.run(func(*args, **kwargs))
    result = func(*args, **kwargs)
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def run_task(
    claimed: Claimed,
    max_memory_mb: float | None = None,
    progress_writer: ProgressWriter | None = None,
) -> Report:
    """Run the task in this process; return its report (never raises).

    ``progress_writer`` records ``pq.set_progress()``; by default a connection of the
    child's own (see :mod:`django_pq.worker.progress`).
    """
    try:
        func = resolve(claimed.name)
    except NotATaskFunction as error:
        return Report(status="failed", error_code="unknown_task", error=str(error))
    except BaseException as error:  # the module's top level ran sys.exit(), raised, ...
        return Report(
            status="failed",
            error_code="unknown_task",
            error=f"Importing the module of {claimed.name} failed:\n{_describe(error)}",
        )
    if pq_settings.DECLARED_TASKS_ONLY and not is_declared(claimed.name, func):
        return Report(
            status="failed",
            error_code="unknown_task",
            error=(
                f"{claimed.name} is not a declared task and PQ_DECLARED_TASKS_ONLY is on: "
                "declare it with @pq.task (or @pq.periodic, or django.tasks' @task)."
            ),
        )
    try:
        payload = claimed.payload
        if isinstance(payload, str | bytes):
            payload = json.loads(payload)
        args, kwargs = decode_payload(payload)
    except (ValueError, RecursionError) as error:
        return Report(
            status="failed",
            error_code="bad_payload",
            error=f"The payload is not decodable JSON: {type(error).__name__}: {error}"[:2000],
        )
    except PayloadError as error:
        return Report(status="failed", error_code="bad_payload", error=str(error))
    own_writer = None
    if progress_writer is None:
        progress_writer = own_writer = OwnConnectionWriter(claimed.id, claimed.run_token)
    context = from_claim(claimed, progress_writer, batch_of)
    try:
        with running(context):
            return _run_with_hooks(func, claimed, args, kwargs, max_memory_mb)
    finally:
        if own_writer is not None:
            own_writer.close()


def _run_with_hooks(
    func: Any,
    claimed: Claimed,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    max_memory_mb: float | None,
) -> Report:
    run = signals.TaskRun(
        id=claimed.id,
        name=claimed.name,
        queue=claimed.queue,
        priority=claimed.priority,
        attempt=claimed.attempts,
        max_attempts=claimed.max_attempts,
        args=args,
        kwargs=kwargs,
        client_id=claimed.client_id,
        periodic_id=claimed.periodic_id,
    )
    hook_errors: list[str] = []
    _send_hook(signals.task_started, hook_errors, sender=func, task=run)
    report: Report
    result: Any = None
    try:
        with _soft_limit(claimed.soft_runtime):
            if _unwrap_task_object(func) is not func:
                # A django.tasks Task: its context, and Django's own task signals.
                from django_pq.backend import run_django_task

                result = run_django_task(func, run, _call)
            else:
                result = _call(func, args, kwargs)
        report = Report(
            status="completed",
            result=json.dumps(encode_value(result, where="the return value")),
        )
    except BaseException as error:
        report = _failure(error, max_memory_mb)
    _send_hook(
        signals.task_finished,
        hook_errors,
        sender=func,
        task=run,
        status=report.status,
        result=result if report.status == "completed" else None,
        error=report.error,
    )
    if hook_errors:
        all_errors = "\n".join(filter(None, [report.error, *hook_errors]))
        report = dataclasses.replace(report, error=all_errors)
    return report


def _raise_time_limit(signum: int, frame: Any) -> None:
    raise TimeLimitExceeded(
        "The task ran past its soft_runtime; it may clean up before max_runtime stops it."
    )


@contextlib.contextmanager
def _soft_limit(seconds: float | None) -> Any:
    """Raise :class:`TimeLimitExceeded` in the task's main thread after ``seconds`` (once).

    A real-time interval timer and SIGALRM: the exception surfaces at the next bytecode
    the main thread runs, in sync code and in an event loop alike. A value a row may hold
    that is no usable limit (NaN, infinity, zero or below) sets none.
    """
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        yield
        return
    try:
        previous = signal.signal(signal.SIGALRM, _raise_time_limit)
    except ValueError:  # not the main thread (an embedding runner): no soft limit
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _failure(error: BaseException, max_memory_mb: float | None) -> Report:
    """The report of a run that raised ``error``."""
    if isinstance(error, TimeLimitExceeded):
        return Report(
            status="failed",
            error_code="soft_timeout",
            error=_describe(error),
            exception_types=[exception_name(cls) for cls in type(error).__mro__],
        )
    if isinstance(error, RetryLater):
        reason = f": {error.reason}" if error.reason else ""
        return Report(
            status="failed",
            error_code="retry_later",
            error=f"The task asked to run again in {error.delay:g} s{reason}.",
            retry_in=error.delay,
            count_attempt=error.count_attempt,
        )
    if isinstance(error, MemoryError) and max_memory_mb is not None:
        return Report(
            status="failed",
            error_code="memory",
            error=(
                f"The task exceeded its memory limit of {max_memory_mb:g} MB "
                f"(an allocation failed).\n{_describe(error)}"
            ),
        )
    return Report(
        status="failed",
        error_code="exception",
        error=_describe(error),
        exception_types=[exception_name(cls) for cls in type(error).__mro__][:1000],
    )


def execute(
    claimed: Claimed,
    max_memory_mb: float | None = None,
    progress_writer: ProgressWriter | None = None,
) -> dict[str, Any]:
    """:func:`run_task`, its report as the JSON object the pipe carries (for
    ``django_pq.testing``, which runs tasks inline and judges them as the worker does)."""
    return run_task(claimed, max_memory_mb, progress_writer).as_json()


def _describe(error: BaseException) -> str:
    if isinstance(error, SystemExit):
        return f"The task called sys.exit({error.code!r}).\n" + "".join(
            traceback.format_exception(error)
        )
    return "".join(traceback.format_exception(error))


def _write_line(fd: int, report: Report) -> None:
    view = memoryview(report.encode())
    while view:
        view = view[os.write(fd, view) :]


def _read_task(task_fd: int) -> Claimed | None:
    """The next task the parent hands over, or None when it closes the pipe."""
    line = bytearray()
    while not line.endswith(b"\n"):
        chunk = os.read(task_fd, 65536)
        if not chunk:
            return None
        line += chunk
    return Claimed(**json.loads(line))


def _resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 1048576


def run_child(
    claimed: Claimed,
    report_fd: int,
    parent_pid: int,
    lease: LeaseClock,
    max_memory_mb: float | None,
    task_fd: int | None = None,
    tasks_per_child: int = 1,
    max_child_memory_mb: float | None = None,
) -> NoReturn:
    """Entry point right after ``fork()``: run tasks, write their reports, exit.

    With ``tasks_per_child`` above 1 the child waits on ``task_fd`` for further tasks
    after each report, and retires after that many, or early once its resident size
    passes ``max_child_memory_mb``.
    """
    code = 0
    try:
        _prepare_process(parent_pid, lease, max_memory_mb)
        me = os.getpid()
        task: Claimed | None = claimed
        for done in range(1, tasks_per_child + 1):
            assert task is not None
            before = resource.getrusage(resource.RUSAGE_SELF)
            report = run_task(task, max_memory_mb)
            if os.getpid() != me:
                # A copy the task forked returned from it (no os._exit): only this child
                # reports, and the copy must neither read the next task nor close the
                # connections it shares with this child.
                os._exit(0)
            after = resource.getrusage(resource.RUSAGE_SELF)
            # Decided before reporting, so the parent never hands a task to a leaving child.
            # Past the memory limit it retires early: a fresh fork starts lean again.
            retiring = (
                done == tasks_per_child
                or task_fd is None
                or (max_child_memory_mb is not None and _resident_mb() > max_child_memory_mb)
            )
            report = dataclasses.replace(
                report,
                cpu_seconds=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
                peak_rss=after.ru_maxrss * 1024,
                retiring=retiring,
            )
            _write_line(report_fd, report)
            if retiring or task_fd is None:
                break
            close_old_connections()  # as between requests: no broken state carried over
            task = _read_task(task_fd)
            if task is None:
                break
    except BaseException:
        code = 70
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            # The child's own connections, if a task opened any: say goodbye properly.
            if any(conn.connection is not None for conn in connections.all(initialized_only=True)):
                connections.close_all()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
