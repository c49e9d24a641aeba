"""Named crash points, for fault-injection tests. Inert unless the environment names them.

``DJANGO_PQ_CRASH_AT="after_claim:kill"`` makes the worker SIGKILL itself the first time
it passes ``after_claim``; ``"before_finish:stall:3"`` stops it (SIGSTOP) the third time.
Several points are separated by commas. Actions: ``kill`` (SIGKILL), ``stall`` (SIGSTOP:
frozen until someone sends SIGCONT), ``exit`` (``os._exit(99)``, no cleanup).

Points: ``after_claim`` (the claim committed, nothing forked yet), ``after_fork`` (a child
was forked), ``after_child_exit`` (a child was reaped, its outcome not yet written),
``before_finish`` (outcomes about to be committed), ``in_reaper`` (lost tasks found, not
yet finished).
"""

from __future__ import annotations

import os
import signal

ENVIRONMENT_VARIABLE = "DJANGO_PQ_CRASH_AT"
POINTS = ("after_claim", "after_fork", "after_child_exit", "before_finish", "in_reaper")

_plan: dict[str, tuple[str, int]] | None = None
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
