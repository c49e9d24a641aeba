"""The parent's view of its running children: fork, watch, stop, and judge how each ended."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import resource
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from django_pq.store.worker import Claimed, Outcome
from django_pq.worker.child import LeaseClock, run_child
from django_pq.worker.report import UNREADABLE, Report

# Signals the parent handles itself; blocked around fork() so a child never runs the
# parent's handlers in the moment before it resets them.
PARENT_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGQUIT}


@dataclass
class RunningChild:
    """One forked child process and what the parent knows about it.

    ``task`` is the task it is running, or None while a reused child waits for the next.
    """

    task: Claimed | None
    pid: int
    report_fd: int
    started: float
    deadline: float | None
    report: bytearray = field(default_factory=bytearray)
    stop_reason: str = ""  # why the parent is stopping it: timeout, memory, cancelled, ...
    stop_message: str = ""
    kill_at: float | None = None  # when SIGTERM turns into SIGKILL
    pipe_closed: bool = False
    task_fd: int | None = None  # where a reused child reads its next task
    tasks_done: int = 0

    @property
    def is_idle(self) -> bool:
        """A reused child waiting for a task, fit to take one."""
        return self.task is None and self.task_fd is not None and not self.stop_reason

    def stop(self, reason: str, message: str, grace: float) -> None:
        """SIGTERM the child and its process group now, SIGKILL them after ``grace`` seconds."""
        if self.stop_reason:
            return
        self.stop_reason, self.stop_message = reason, message
        self.kill_at = time.monotonic() + grace
        _signal_group(self.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)

    def escalate(self, now: float) -> None:
        """SIGKILL a stopped child whose grace ran out."""
        if self.kill_at is not None and now >= self.kill_at:
            _signal_group(self.pid, signal.SIGKILL)
            self.kill_at = None

    def read_report(self) -> None:
        """Read what the child wrote so far; note EOF."""
        while not self.pipe_closed:
            try:
                chunk = os.read(self.report_fd, 65536)
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno == errno.EINTR:
                    continue
                chunk = b""
            if not chunk:
                self.pipe_closed = True
                os.close(self.report_fd)
                return
            self.report += chunk

    def take_report(self) -> Report | None:
        """The next complete report (one line) the child wrote, if any.

        A line that is not a report still counts as one, a failed one: the task may have
        written to the pipe itself, and that must fail the task, not the worker.
        """
        end = self.report.find(b"\n")
        if end < 0:
            return None
        line, self.report = bytes(self.report[:end]), self.report[end + 1 :]
        return Report.parse(line) or UNREADABLE

    def assign(self, task: Claimed, max_runtime: float | None) -> bool:
        """Hand a reused child its next task. False if the child is gone."""
        assert self.task_fd is not None
        try:
            os.write(self.task_fd, json.dumps(dataclasses.asdict(task)).encode() + b"\n")
        except OSError:
            self.release()
            return False
        self.task, self.started = task, time.monotonic()
        self.deadline = None if max_runtime is None else self.started + max_runtime
        return True

    def release(self) -> None:
        """Tell a reused child no more tasks come: it exits after its current one."""
        if self.task_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.task_fd)
            self.task_fd = None

    def rss_bytes(self) -> int | None:
        try:
            with open(f"/proc/{self.pid}/statm") as statm:
                return int(statm.read().split()[1]) * resource.getpagesize()
        except (OSError, ValueError, IndexError):
            return None


def kill_group(pid: int) -> None:
    """SIGKILL what is left of a child's process group (grandchildren it left behind)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _signal_group(pid: int, signum: int) -> None:
    """Signal the child's process group, and always the child itself: a task may have left
    the group (``os.setpgid(0, 0)``), or not yet made it. ``pid`` is a child not yet waited
    for, so it cannot have been reused."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def fork_child(
    task: Claimed,
    lease: LeaseClock,
    max_runtime: float | None,
    max_memory_mb: float | None,
    tasks_per_child: int = 1,
    max_child_memory_mb: float | None = None,
) -> RunningChild:
    """Fork a child running ``task`` (and, reused, later ones); returns its record."""
    read_fd, write_fd = os.pipe()
    task_read, task_write = os.pipe() if tasks_per_child > 1 else (None, None)
    parent_pid = os.getpid()
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, PARENT_SIGNALS)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns
            os.close(read_fd)
            if task_write is not None:
                os.close(task_write)
            run_child(
                task,
                write_fd,
                parent_pid,
                lease,
                max_memory_mb,
                task_read,
                tasks_per_child,
                max_child_memory_mb,
            )
        # Also set from the parent, so killpg works even before the child gets to it.
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    os.close(write_fd)
    if task_read is not None:
        os.close(task_read)
    os.set_blocking(read_fd, False)
    started = time.monotonic()
    deadline = None if max_runtime is None else started + max_runtime
    return RunningChild(
        task=task,
        pid=pid,
        report_fd=read_fd,
        started=started,
        deadline=deadline,
        task_fd=task_write,
    )


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def judge(
    child: RunningChild,
    status: int,
    usage: resource.struct_rusage | None,
    error_max_length: int,
    retry_delay: float,
) -> Outcome:
    """How a child's current task ended, from what it reported (if anything) and how the
    process ended (``status`` and ``usage`` from ``wait4``)."""
    assert child.task is not None
    return verdict(
        child.task,
        Report.parse(child.report),
        status,
        usage,
        stop_reason=child.stop_reason,
        stop_message=child.stop_message,
        error_max_length=error_max_length,
        retry_delay=retry_delay,
    )


def verdict(
    task: Claimed,
    report: Report | None,
    exit_status: int | None,
    usage: resource.struct_rusage | None,
    *,
    stop_reason: str = "",
    stop_message: str = "",
    error_max_length: int,
    retry_delay: float,
) -> Outcome:
    """Turn a task's report, its process's exit status and resource use (from ``wait4``:
    None while the process lives on) and why the parent stopped it (``stop_reason``, empty
    if it did not) into an Outcome."""
    if report is not None and report.cpu_seconds is not None:
        peak_rss, cpu = report.peak_rss, report.cpu_seconds
    elif usage is not None:
        peak_rss, cpu = int(usage.ru_maxrss) * 1024, float(usage.ru_utime + usage.ru_stime)
    else:
        peak_rss, cpu = None, None
    common: dict[str, Any] = {
        "task_id": task.id,
        "run_token": task.run_token,
        "peak_rss": peak_rss,
        "cpu_seconds": cpu,
        "retry_delay": retry_delay,
    }
    if stop_reason == "cancelled" and not (report is not None and report.status == "completed"):
        return Outcome(status="cancelled", error_code="cancelled", error=stop_message, **common)
    if stop_reason and report is None:
        return Outcome(status="failed", error_code=stop_reason, error=stop_message, **common)
    if report is not None:
        error = _bounded(report.error, error_max_length)
        if report.status == "completed":
            return Outcome(status="completed", result=report.result, error=error, **common)
        code = report.error_code or "exception"
        if stop_reason:
            code, error = stop_reason, _bounded(f"{stop_message}\n{error}", error_max_length)
            return Outcome(status="failed", error_code=code, error=error, **common)
        types = None if report.exception_types is None else json.dumps(report.exception_types)
        return Outcome(
            status="failed",
            error_code=code,
            error=error,
            exception_types=types,
            retry_in=report.retry_in,
            count_attempt=report.count_attempt,
            **common,
        )
    status = 0 if exit_status is None else exit_status
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        message = f"The task's process was killed by {_signal_name(signum)}."
        if signum == signal.SIGKILL:
            message += " (Not by the worker: an operator, or the kernel's OOM killer.)"
        return Outcome(status="failed", error_code="signal", error=message, **common)
    code_number = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    return Outcome(
        status="failed",
        error_code="exception",
        error=f"The task's process exited with status {code_number} without reporting "
        "(os._exit, or a crash before it could report).",
        **common,
    )


def _bounded(text: str, limit: int) -> str:
    """Error text Postgres accepts (no NUL, nothing UTF-8 cannot encode) and of bounded
    size (keep head and tail)."""
    # A lone surrogate (a file name decoded with surrogateescape, say) is a str Python
    # holds and the driver cannot send: escaped, like NUL, so the error still lands.
    text = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n... [{len(text) - limit} characters cut] ...\n{text[-half:]}"
