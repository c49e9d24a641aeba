"""Schedules declared in code, synced into ``pq_periodic`` at deploy time.

Declare with the ``@pq.periodic(...)`` decorator on a task function (in an installed
app's ``tasks`` module), or in the ``PQ_SCHEDULES`` setting. ``manage.py
pq_sync_schedules`` (and every worker on start) creates or updates them; a staff pause
made in the admin survives, and ``--prune`` removes declared schedules that are no
longer declared.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.apps import apps
from django.utils.module_loading import autodiscover_modules

from django_pq.conf import pq_settings
from django_pq.exceptions import InvalidSchedule
from django_pq.models import Periodic
from django_pq.task_paths import task_path

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Declaration:
    """One declared schedule: the function, its arguments, and ``schedule()`` options."""

    func: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def identity(self) -> tuple[str, str]:
        return task_path(self.func), str(self.options.get("key", ""))


_DECORATED: list[Declaration] = []


def periodic(*args: Any, **options: Any) -> Callable[[F], F]:
    """Declare a schedule for the decorated task function; see :func:`django_pq.schedule`.

    ``@pq.periodic(run_every=timedelta(minutes=5))`` or ``@pq.periodic(cron="0 9 * * 1",
    timezone="Europe/Berlin", key="weekly")``. Positional ``args`` and an ``kwargs=`` dict
    are passed to the task. Stack several with different keys for several schedules.
    """
    task_kwargs = options.pop("kwargs", {})

    def register(func: F) -> F:
        _DECORATED.append(Declaration(func, tuple(args), dict(task_kwargs), options))
        return func

    return register


def _from_setting(entry: Any, index: int) -> Declaration:
    if not isinstance(entry, dict) or "task" not in entry:
        raise InvalidSchedule(
            f"PQ_SCHEDULES[{index}] must be a dict with a 'task' key ('app.tasks.function'), "
            f"got {entry!r}."
        )
    options = dict(entry)
    dotted = str(options.pop("task"))
    module_name, _, attribute = dotted.replace(":", ".").rpartition(".")
    try:
        func = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError):
        raise InvalidSchedule(
            f"PQ_SCHEDULES[{index}] names task {dotted!r}, which cannot be imported. "
            "Use the dotted path of a function, e.g. 'shop.tasks.sync_inventory'."
        ) from None
    args = tuple(options.pop("args", ()))
    kwargs = dict(options.pop("kwargs", {}))
    return Declaration(func, args, kwargs, options)


def declared_paths() -> set[str]:
    """The ``module:function`` paths of the functions given schedules by ``@pq.periodic``
    or ``PQ_SCHEDULES``, without importing anything."""
    paths = {f"{d.func.__module__}:{d.func.__qualname__}" for d in _DECORATED}
    for entry in getattr(pq_settings, "SCHEDULES", None) or []:
        if isinstance(entry, dict) and isinstance(entry.get("task"), str):
            dotted = entry["task"]
            if ":" not in dotted:
                module_name, _, attribute = dotted.rpartition(".")
                dotted = f"{module_name}:{attribute}"
            paths.add(dotted)
    return paths


def declared_schedules() -> list[Declaration]:
    """Every declared schedule: decorators in the apps' ``tasks`` modules, then the setting."""
    if apps.ready:
        autodiscover_modules("tasks")
    setting = getattr(pq_settings, "SCHEDULES", None) or []
    declarations = list(_DECORATED) + [_from_setting(e, i) for i, e in enumerate(setting)]
    seen: dict[tuple[str, str], Declaration] = {}
    for declaration in declarations:
        if declaration.identity in seen:
            name, key = declaration.identity
            raise InvalidSchedule(
                f"{name} is declared twice with key {key!r}; give each schedule of one "
                "function its own key."
            )
        seen[declaration.identity] = declaration
    return list(seen.values())


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def sync_schedules(*, prune: bool = False) -> SyncReport:
    """Create or update every declared schedule, keeping pauses; optionally remove the rest."""
    # Here, not at the top: @periodic runs while tasks modules import, before the app
    # registry is ready, and django_pq.schedules imports the models.
    from django_pq.schedules import _upsert

    report = SyncReport()
    declared = declared_schedules()
    for declaration in declared:
        name, key = declaration.identity
        options = {
            "run_every": None,
            "cron": None,
            "timezone": None,
            "key": "",
            "max_concurrent": 1,
            "priority": 50,
            "queue": None,
            "max_runtime": None,
            "max_attempts": None,
            "client_id": None,
            **declaration.options,
        }
        options.pop("active", None)  # a staff pause wins over the code
        _, outcome = _upsert(
            declaration.func,
            declaration.args,
            declaration.kwargs,
            active=None,
            is_declared=True,
            **options,
        )
        getattr(report, outcome).append(f"{name}[{key}]" if key else name)
    if prune:
        keep = {d.identity for d in declared}
        for periodic in Periodic.objects.using(pq_settings.DATABASE).filter(is_declared=True):
            if (periodic.name, periodic.key) not in keep:
                periodic.delete()
                report.removed.append(str(periodic))
    return report
