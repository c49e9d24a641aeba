"""Task functions declared with ``@pq.task(...)``: their enqueue defaults, and the registry.

The decorator returns the function itself, so it stays callable as a plain function,
pickles and resolves by the same ``module:qualname`` path, and costs a worker nothing
per run. It adds ``func.enqueue(...)`` and ``func.prepare(...)``. ``pq.enqueue(func, ...)``
applies the declared defaults; options given at the call win.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from django_pq.exceptions import NotATaskFunction, TaskRefused

F = TypeVar("F", bound=Callable[..., Any])

#: The enqueue options ``@pq.task`` may set defaults for. (``run_at`` and ``client_id``
#: belong to one call, not to every call of a function.)
DECLARABLE_OPTIONS = (
    "queue",
    "priority",
    "max_attempts",
    "max_runtime",
    "soft_runtime",
    "retry",
    "keep_result",
    "limit_key",
    "fair_key",
)


@dataclass(frozen=True)
class DeclaredTask:
    """One ``@pq.task`` declaration: the function's path and its enqueue defaults."""

    path: str
    defaults: dict[str, Any]


_DECLARED: dict[str, DeclaredTask] = {}


def _check_defaults(where: str, defaults: dict[str, Any]) -> dict[str, Any]:
    # Imported here: the checks live with enqueueing, which imports this module.
    from django_pq.enqueueing import check_options

    unknown = sorted(set(defaults) - set(DECLARABLE_OPTIONS))
    if unknown:
        raise TaskRefused(
            f"{where} got unknown option(s) {', '.join(map(repr, unknown))}; it takes "
            f"{', '.join(DECLARABLE_OPTIONS)}. (run_at and client_id are given per call.)"
        )
    check_options(defaults, declared=True)
    return dict(defaults)


@overload
def task(func: F, /) -> F: ...
@overload
def task(func: None = None, /, **defaults: Any) -> Callable[[F], F]: ...


def task(func: Any = None, /, **defaults: Any) -> Any:
    """Declare a task function and its enqueue defaults.

    ``@pq.task`` or ``@pq.task(queue="mail", priority=pq.Priority.HIGH, max_runtime=60,
    retry=pq.Retry(5, on={"exception", "timeout"}))``. The options are those of
    :func:`django_pq.enqueue` that make sense for every call; an option given to
    ``enqueue`` overrides the declared one. Bad options are refused here, at import.
    """
    checked = _check_defaults("@pq.task", defaults)

    def declare(func: F) -> F:
        if not callable(func) or not hasattr(func, "__qualname__"):
            raise NotATaskFunction(f"@pq.task decorates a function; got {func!r}.")
        if "<" in func.__qualname__:
            raise NotATaskFunction(
                f"@pq.task cannot declare {func.__qualname__}: a lambda or a function "
                "defined inside another cannot be imported by a worker. Define it at "
                "module level."
            )
        path = f"{func.__module__}:{func.__qualname__}"
        _DECLARED[path] = DeclaredTask(path, checked)
        from django_pq.enqueueing import enqueue, prepare

        func.__pq_task__ = _DECLARED[path]  # type: ignore[attr-defined]
        func.enqueue = functools.partial(enqueue, func)  # type: ignore[attr-defined]
        func.prepare = functools.partial(prepare, func)  # type: ignore[attr-defined]
        return func

    return declare(func) if func is not None else declare


def declared_defaults(func: Any) -> dict[str, Any]:
    """The enqueue defaults ``@pq.task`` declared for ``func`` (empty if none)."""
    declared = getattr(func, "__pq_task__", None)
    return declared.defaults if isinstance(declared, DeclaredTask) else {}


def declared_limit_keys() -> set[str] | None:
    """The ``limit_key`` strings ``@pq.task`` functions declare; None when one derives its
    key from the call's arguments (then any key may come)."""
    keys = set()
    for declared in _DECLARED.values():
        key = declared.defaults.get("limit_key")
        if callable(key):
            return None
        if key is not None:
            keys.add(key)
    return keys


def declared_paths() -> list[str]:
    """The paths of every ``@pq.task`` function imported so far."""
    return sorted(_DECLARED)


def is_declared(path: str, func: Any) -> bool:
    """Whether ``func`` (found at ``path``) was declared as a task: ``@pq.task``,
    ``@pq.periodic``, a schedule of ``PQ_SCHEDULES``, or a ``django.tasks`` ``@task``.
    ``PQ_DECLARED_TASKS_ONLY`` lets a worker run only these."""
    from django_pq.declared import declared_paths as scheduled_paths
    from django_pq.task_paths import _unwrap_task_object

    return path in _DECLARED or _unwrap_task_object(func) is not func or path in scheduled_paths()
