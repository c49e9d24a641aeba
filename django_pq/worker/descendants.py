"""Processes a task started and hid: found under its child or reparented to the worker,
and killed when the task that could have started them has ended.

A task's process group goes with it (``kill_group``), but a task may leave the group
(``setpgid``), start a new session (``setsid``) or double-fork. On Linux the worker parent
is a *child subreaper* (``PR_SET_CHILD_SUBREAPER``): an orphan below it is reparented to it
instead of to init, so every descendant stays visible in ``/proc/<pid>/task/*/children``.
Each descendant is remembered with the runs (run tokens) that could have started it: the
run of the child it was seen under, or, for an orphan first seen already reparented to
the worker, every run going on at that moment. It is killed, with whatever it started,
once none of those runs is still going; so it never outlives its task by more than the
other tasks that were running beside it, and with one task at a time never at all.

Elsewhere (no ``prctl``, no ``/proc``) nothing is tracked: process groups are the only
net, and a task that leaves its group can leave processes behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterable
from pathlib import Path

from django_pq.worker.child import _LIBC

logger = logging.getLogger("django_pq.worker")

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the child subreaper of its descendants. False where unsupported."""
    if _LIBC is None or not Path("/proc/self/task").is_dir():
        return False
    try:
        return bool(_LIBC.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except AttributeError:  # no prctl: not Linux
        return False


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): tells a pid from its reuse."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in {"Z", "X"} else fields[19]


def children_of(pid: int) -> set[int]:
    """The live direct children of ``pid``, from every one of its threads."""
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for thread in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                found.update(int(p) for p in (thread / "children").read_text().split())
    return found


def tree_of(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (not ``pid`` itself)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children_of(todo.pop()) - found:
            found.add(child)
            todo.append(child)
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid``, its process group if it leads one, and everything below it."""
    for victim in [pid, *tree_of(pid)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(victim) == victim:
                os.killpg(victim, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(victim, signal.SIGKILL)


class Descendants:
    """The descendants of the worker's children, each with the runs that may own it."""

    def __init__(self) -> None:
        self.enabled = False
        self._known: dict[int, tuple[str, frozenset[str]]] = {}  # pid -> (start, runs)

    def observe_children(self, runs_by_child: dict[int, str]) -> None:
        """Remember what is below each running child (child pid → its run token)."""
        if not self.enabled:
            return
        for child_pid, run in runs_by_child.items():
            for pid in tree_of(child_pid):
                self._remember(pid, frozenset({run}))

    def observe(self, runs_by_child: dict[int, str], children: Iterable[int]) -> None:
        """Remember what is below each running child, and the orphans reparented to the
        worker: its own children that are none of ``children`` (the forked ones)."""
        if not self.enabled:
            return
        self.observe_children(runs_by_child)
        strays = children_of(os.getpid()) - set(children)
        everyone = frozenset(runs_by_child.values())
        for stray in strays:
            for pid in [stray, *tree_of(stray)]:
                self._remember(pid, everyone)

    def _remember(self, pid: int, runs: frozenset[str]) -> None:
        if pid in self._known:
            return
        start = _start_time(pid)
        if start is not None:
            self._known[pid] = (start, runs)

    def kill_finished(self, live_runs: set[str]) -> None:
        """Kill the remembered descendants none of whose runs is still going."""
        for pid, (start, runs) in list(self._known.items()):
            if _start_time(pid) != start:
                del self._known[pid]  # gone (or its pid reused): nothing to do
            elif not runs & live_runs:
                logger.warning(
                    "Killing pid %d, left behind by a finished task", pid, extra={"pid": pid}
                )
                kill_tree(pid)
                del self._known[pid]

    def kill_all(self) -> None:
        """Kill every remembered descendant (the worker is stopping)."""
        self.kill_finished(set())
