"""Task functions that both real pq 0.9.1 and django-pq run: no Django import here.

``echo`` returns :func:`describe` of what it was called with, so a test can check that the
function received exactly the values pq would have handed it.
"""

from __future__ import annotations

from typing import Any


def describe(value: Any) -> Any:
    """``value`` as JSON-only lists and strings: every type name and repr, dicts by key.

    The same on both sides (Python 3.11+ and pq's 3.13), and independent of the key order
    that JSONB gives back.
    """
    if isinstance(value, dict):
        return ["dict", [[describe(k), describe(v)] for k, v in sorted(value.items(), key=repr)]]
    if isinstance(value, list | tuple):
        return [type(value).__name__, [describe(item) for item in value]]
    if isinstance(value, set | frozenset):
        return [type(value).__name__, sorted(repr(item) for item in value)]
    return [type(value).__name__, repr(value)]


def describe_call(args: Any, kwargs: dict[str, Any]) -> Any:
    """:func:`describe` of one call's arguments."""
    return [describe(list(args)), describe(dict(kwargs))]


def echo(*args: Any, **kwargs: Any) -> Any:
    """Return what the task was called with."""
    return describe_call(args, kwargs)


def boom(reason: str) -> None:
    """Fail, so pq's worker leaves a failed row behind."""
    raise RuntimeError(f"boom: {reason}")


def wait_for(path: str) -> str:
    """Runs until ``path`` exists (at most five minutes): a task a test can hold running."""
    import os
    import time

    deadline = time.monotonic() + 300
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    return path
