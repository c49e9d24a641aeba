"""Named crash points, for fault-injection tests. Inert unless the environment names them.

``DJANGO_PQ_CRASH_AT="after_claim:kill"`` makes the worker SIGKILL itself the first time
it passes ``after_claim``; ``"before_finish:stall:3"`` stops it (SIGSTOP) the third time.
Several points are separated by commas. Actions: ``kill`` (SIGKILL), ``stall`` (SIGSTOP:
frozen until someone sends SIGCONT), ``exit`` (``os._exit(99)``, no cleanup).

Points: ``after_claim`` (the claim committed, nothing forked yet), ``after_fork`` (a child
was forked), ``after_child_exit`` (a child was reaped, its outcome not yet written),
``before_finish`` (outcomes about to be committed), ``in_reaper`` (lost tasks found, not
yet finished).

Lost connections, by statement: ``DJANGO_PQ_CUT_CONNECTION="heartbeat:sent"`` cuts the
worker's connection the first time it runs the statement named ``heartbeat``, after the
statement went to the server and before its reply is read; ``"claim:committed:2"`` cuts it
the second time, right after the statement committed and its reply was read. Every
statement the worker parent runs has a name in :data:`STATEMENTS` (the database layer
refuses a name that is not there), and ``tests/faults/test_connection_loss.py`` has a
scenario for each name at each of :data:`MOMENTS`.
"""

from __future__ import annotations

import os
import signal

ENVIRONMENT_VARIABLE = "DJANGO_PQ_CRASH_AT"
POINTS = ("after_claim", "after_fork", "after_child_exit", "before_finish", "in_reaper")

CUT_VARIABLE = "DJANGO_PQ_CUT_CONNECTION"
#: Every statement on the worker parent's path, by name.
STATEMENTS = (
    "register",  # insert or revive this worker's pq_workers row
    "claim",  # claim ready tasks (nothing to record)
    "finish",  # record finished runs (no free slot to claim for)
    "finish_claim",  # record finished runs and claim, in one transaction
    "finish_one",  # record one outcome alone, after a batch was refused
    "heartbeat",  # renew the lease; learn cancels, lost tasks, timers
    "reap",  # finish the running tasks of dead workers
    "orphans",  # find tasks claimed under our id whose claim reply was lost
    "cancel_check",  # confirm a cancel notification against the row
    "fire",  # fire due schedules (one transaction)
    "prune_tasks",  # delete one batch of old finished tasks
    "prune_workers",  # delete long-dead worker rows
    "deregister",  # mark this worker stopped
)
#: ``sent``: the statement reached the server, its reply never reaches us.
#: ``committed``: the statement committed and we read its reply; then the connection dies.
MOMENTS = ("sent", "committed")

_plan: dict[str, tuple[str, int]] | None = None
_cuts: dict[tuple[str, str], int] | None = None
_statement_passes: dict[tuple[str, str], int] = {}
_passes: dict[str, int] = {}


def _load() -> dict[str, tuple[str, int]]:
    plan: dict[str, tuple[str, int]] = {}
    for item in filter(None, os.environ.get(ENVIRONMENT_VARIABLE, "").split(",")):
        point, _, rest = item.strip().partition(":")
        action, _, nth = rest.partition(":")
        if point not in POINTS or action not in {"kill", "stall", "exit"}:
            raise ValueError(f"{ENVIRONMENT_VARIABLE}: unknown crash point or action in {item!r}")
        plan[point] = (action, int(nth or 1))
    return plan


def crash_point(point: str) -> None:
    """Die or stall here if the environment asks for it; otherwise do nothing, cheaply."""
    global _plan
    if _plan is None:
        _plan = _load()
    if point not in _plan:
        return
    _passes[point] = _passes.get(point, 0) + 1
    action, nth = _plan[point]
    if _passes[point] != nth:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "stall":
        os.kill(os.getpid(), signal.SIGSTOP)
    else:
        os._exit(99)


def _load_cuts() -> dict[tuple[str, str], int]:
    cuts: dict[tuple[str, str], int] = {}
    for item in filter(None, os.environ.get(CUT_VARIABLE, "").split(",")):
        statement, _, rest = item.strip().partition(":")
        moment, _, nth = rest.partition(":")
        if statement not in STATEMENTS or moment not in MOMENTS or not (nth or "1").isdecimal():
            raise ValueError(f"{CUT_VARIABLE}: unknown statement or moment in {item!r}")
        cuts[(statement, moment)] = int(nth or 1)
    return cuts


def cuts_connection(statement: str, moment: str) -> bool:
    """Whether the connection is to be cut at ``moment`` of this run of ``statement``.

    Counts the runs of each statement only when the environment plans a cut for it.
    """
    global _cuts
    if _cuts is None:
        _cuts = _load_cuts()
    key = (statement, moment)
    if key not in _cuts:
        return False
    _statement_passes[key] = _statement_passes.get(key, 0) + 1
    return _statement_passes[key] == _cuts[key]
