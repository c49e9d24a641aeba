"""Turning functions into ``module.path:function`` names and back, within the allowed modules.

The database is not a code-execution channel: a name read from a row is checked against
the allowed modules *before* anything is imported, so a hostile row naming ``os:system``
or a module with import side effects runs nothing.

By default the allowed modules are the project's own apps: the installed apps whose
directory lies inside the project directory and not inside a ``site-packages`` or
``dist-packages`` directory, django-pq itself excluded. The project directory is
``settings.BASE_DIR`` when it is set, otherwise the directory holding the package of the
settings module (``/srv/shop`` for ``/srv/shop/mysite/settings.py``). Everything else
(django-pq's modules, third-party apps, the standard library) runs only when named in
``PQ_ALLOWED_MODULES``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from django.apps import AppConfig, apps
from django.conf import ENVIRONMENT_VARIABLE, settings

from django_pq.conf import pq_settings
from django_pq.exceptions import NotATaskFunction

_ALLOWED_MODULES_HINT = (
    "Move the function into a module of one of your INSTALLED_APPS, or add its module to "
    "the PQ_ALLOWED_MODULES setting (which then replaces the default: list your own apps "
    "there too)."
)


#: Directory names under which installed packages live: never part of a project.
_INSTALLED_PACKAGE_DIRS = frozenset({"site-packages", "dist-packages"})

#: django-pq's own top-level package: its functions (``kill_group``, the benchmark's file
#: writer) are tools for django-pq, not tasks, wherever it is installed.
_OWN_PACKAGE = __name__.partition(".")[0]


def project_directory() -> Path | None:
    """``settings.BASE_DIR``, or the directory that holds the settings module's package.

    None when neither is known (settings made with ``settings.configure()`` and no
    ``BASE_DIR``): then no installed app counts as the project's.
    """
    base_dir = getattr(settings, "BASE_DIR", None)
    if base_dir:
        return Path(base_dir).resolve()
    # override_settings hides SETTINGS_MODULE (its holder says None); the variable that
    # named the module stays.
    module = getattr(settings, "SETTINGS_MODULE", None) or os.environ.get(ENVIRONMENT_VARIABLE, "")
    location = module_location(module.partition(".")[0]) if module else None
    return location.parent if location is not None else None


def module_location(name: str) -> Path | None:
    """The file or package directory of the top-level module ``name``, imported or not.

    Looks the name up without importing it; None for a built-in or unknown module.
    """
    try:
        spec = importlib.util.find_spec(name.partition(".")[0])
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    if spec.origin and os.path.isabs(spec.origin):
        return Path(spec.origin).resolve()
    return None  # "built-in", "frozen"


def is_in_project(location: Path | None, project: Path | None) -> bool:
    """Whether ``location`` is inside ``project`` and not in an installed-packages directory.

    A virtualenv inside the project directory holds third-party packages: the
    ``site-packages`` / ``dist-packages`` part of their path keeps them out.
    """
    if location is None or project is None or not location.is_relative_to(project):
        return False
    return not _INSTALLED_PACKAGE_DIRS.intersection(location.relative_to(project).parts)


def outside_project(module: str) -> str:
    """Why ``module`` is not part of the project (``""`` when it is): for errors and checks."""
    if module.partition(".")[0] == _OWN_PACKAGE:
        return "it is part of django-pq itself"
    location = module_location(module)
    if location is None:
        return "it is built into Python or cannot be found"
    project = project_directory()
    if project is None:
        return "the project directory is unknown (set BASE_DIR)"
    if not is_in_project(location, project):
        return f"it is installed at {location}, outside the project directory {project}"
    return ""


def _is_project_app(config: AppConfig, project: Path | None) -> bool:
    return _is_project_package(config.name, config.path, project)


@functools.lru_cache(maxsize=1024)
def _is_project_package(name: str, path: str, project: Path | None) -> bool:
    # Cached: every enqueue and every task run asks, and resolving paths costs system calls.
    if name.partition(".")[0] == _OWN_PACKAGE:
        return False
    return is_in_project(Path(path).resolve(), project)


def allowed_modules() -> tuple[str, ...]:
    """Module prefixes whose functions may run: ``PQ_ALLOWED_MODULES``, or the project's apps.

    The project's apps are the installed apps inside the project directory (see the module
    docstring); django-pq, Django's apps and third-party apps are not among them.
    """
    configured = pq_settings.ALLOWED_MODULES
    if configured is not None:
        return tuple(configured)
    project = project_directory()
    return tuple(
        config.name for config in apps.get_app_configs() if _is_project_app(config, project)
    )


def refusal(module: str) -> str:
    """The reason ``module`` may not run tasks, and how to allow it, for error messages."""
    if pq_settings.ALLOWED_MODULES is not None:
        return f"{module} is not in PQ_ALLOWED_MODULES. {_ALLOWED_MODULES_HINT}"
    reason = outside_project(module) or "it is not in one of the project's installed apps"
    return (
        f"{module} is not one of the project's own apps ({reason}); by default only those "
        f"run tasks. {_ALLOWED_MODULES_HINT}"
    )


def is_allowed_module(module: str, allowed: tuple[str, ...] | None = None) -> bool:
    """Whether ``module`` is one of the allowed modules or inside one (``app`` covers ``app.x``).

    ``allowed`` saves reading the settings again when the caller has just done so.
    """
    prefixes = allowed_modules() if allowed is None else allowed
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def _unwrap_task_object(func: Any) -> Any:
    # django.tasks' Task (and the django-tasks backport) wraps the function in `.func`.
    inner = getattr(func, "func", None)
    if inner is not None and callable(inner) and hasattr(func, "backend"):
        return inner
    return func


def task_path(func: Callable[..., Any]) -> str:
    """The ``module.path:qualname`` of a task function, refusing what a worker could not run."""
    func = _unwrap_task_object(func)
    if isinstance(func, functools.partial):
        raise NotATaskFunction(
            "functools.partial objects cannot be tasks: enqueue the underlying function and "
            "pass the bound arguments to enqueue() instead."
        )
    if inspect.ismethod(func):
        raise NotATaskFunction(
            f"{func.__qualname__} is a bound method; a worker cannot rebuild its instance. "
            "Enqueue a module-level function and pass the instance's primary key as an argument."
        )
    if not (inspect.isfunction(func) or inspect.isbuiltin(func)):
        raise NotATaskFunction(
            f"{func!r} is not a function. Tasks are plain module-level functions "
            "(def or async def)."
        )
    module = getattr(func, "__module__", None) or ""
    qualname = getattr(func, "__qualname__", "")
    if func.__name__ == "<lambda>":
        raise NotATaskFunction(
            "Lambdas cannot be tasks: a worker has no way to find them. Define a module-level "
            "function with def and enqueue that."
        )
    if "<locals>" in qualname:
        raise NotATaskFunction(
            f"{qualname} is defined inside another function (a closure or nested function); "
            "a worker cannot import it. Move it to module level and pass what it captured "
            "as arguments."
        )
    if module == "__main__":
        raise NotATaskFunction(
            f"{qualname} is defined in __main__, which a worker cannot import. "
            "Move it into a module of one of your installed apps."
        )
    allowed = allowed_modules()
    if not is_allowed_module(module, allowed):
        raise NotATaskFunction(
            f"{module}.{qualname} cannot be a task: {refusal(module)} Allowed now: "
            f"{', '.join(allowed) or 'none'}."
        )
    path = f"{module}:{qualname}"
    try:
        resolved = resolve(path, allowed)
    except NotATaskFunction:
        resolved = None
    if _unwrap_task_object(resolved) is not func:
        raise NotATaskFunction(
            f"{module}.{qualname} cannot be imported under its own name (it is shadowed, "
            "renamed or created dynamically). Enqueue a function that is reachable as "
            f"{module}.{qualname}."
        )
    return path


def resolve(path: str, allowed: tuple[str, ...] | None = None) -> Callable[..., Any]:
    """Import the function named ``module.path:qualname``, only from allowed modules
    (``allowed``, or those of the settings).

    Raises :class:`NotATaskFunction` without importing anything when the module is not
    allowed, and when the name is malformed or does not lead to a callable.
    """
    module_name, separator, qualname = path.partition(":")
    if not separator or not module_name or not qualname:
        raise NotATaskFunction(f"{path!r} is not a task name of the form 'module.path:function'.")
    if not is_allowed_module(module_name, allowed):
        raise NotATaskFunction(f"{path} cannot run: {refusal(module_name)}")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise NotATaskFunction(f"Cannot import {module_name}: {error}") from error
    for part in qualname.split("."):
        if part.startswith("__"):
            raise NotATaskFunction(f"{path!r} names a private attribute.")
        try:
            target = getattr(target, part)
        except AttributeError:
            raise NotATaskFunction(f"{module_name} has no attribute {qualname}.") from None
        if inspect.ismodule(target):
            # `app.tasks:os.system` would walk from an allowed module into any module it
            # imported: the name must stay inside the allowed module.
            raise NotATaskFunction(f"{path!r} reaches into another module ({target.__name__}).")
    # A django.tasks Task is not callable itself; the function it wraps is.
    func = _unwrap_task_object(target)
    if not callable(func):
        raise NotATaskFunction(f"{path} is not callable.")
    defined_in = getattr(func, "__module__", None) or ""
    if not is_allowed_module(defined_in):
        # Imported into an allowed module from elsewhere (`from os import system`).
        raise NotATaskFunction(
            f"{path} is defined in {defined_in or 'an unknown module'}, outside the allowed "
            f"modules. {_ALLOWED_MODULES_HINT}"
        )
    return target  # type: ignore[no-any-return]


def _task_modules() -> list[str]:
    """The ``tasks`` modules of the allowed modules, in order, without duplicates.

    An allowed entry that already names a ``tasks`` module (``PQ_ALLOWED_MODULES =
    ["shop.tasks"]``) stands for itself.
    """
    names: list[str] = []
    for prefix in allowed_modules():
        candidate = prefix if prefix.rpartition(".")[2] == "tasks" else f"{prefix}.tasks"
        if candidate not in names:
            names.append(candidate)
    return names


def _module_exists(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        # A missing parent package: nothing to list, and nothing went wrong.
        return False


def _functions_defined_in(module_name: str) -> list[tuple[str, str]]:
    module = importlib.import_module(module_name)
    found: list[tuple[str, str]] = []
    for attribute, value in vars(module).items():
        func = _unwrap_task_object(value)
        if attribute.startswith("_") or not inspect.isfunction(func):
            continue
        # Imported helpers (``from x import y``) belong to their own module, not this one.
        if func.__module__ != module_name:
            continue
        try:
            path = task_path(func)
        except NotATaskFunction:
            continue
        kind = "async " if inspect.iscoroutinefunction(func) else ""
        found.append((path, f"{kind}{module_name}.{func.__qualname__}"))
    return found


def discover_task_functions(also: Iterable[str] = ()) -> list[tuple[str, str]]:
    """The task functions staff may pick, as ``("module:function", label)`` pairs by path.

    Lists the module-level functions (sync and async) defined in the ``tasks`` module of
    each allowed module (``<app>.tasks``), then adds the paths in ``also`` (the functions
    existing schedules already name, so editing a schedule never loses its task). Importing
    a ``tasks`` module that exists but fails to import raises: a broken module should be
    seen, not silently left out of the list.
    """
    choices: dict[str, str] = {}
    for module_name in _task_modules():
        if _module_exists(module_name):
            choices.update(_functions_defined_in(module_name))
    for name in also:
        choices.setdefault(name, name)
    return sorted(choices.items())


def preload_task_modules() -> list[str]:
    """Import the allowed ``tasks`` modules once, in the worker parent, before any fork.

    Each forked child then finds them already imported instead of importing them again for
    every task. A module that fails to import is logged and skipped: its tasks fail as
    ``unknown_task`` with the import error, and the worker keeps serving the others.
    """
    import logging

    loaded = []
    for module_name in _task_modules():
        if not _module_exists(module_name):
            continue
        try:
            importlib.import_module(module_name)
        except Exception:
            logging.getLogger("django_pq.worker").exception("Cannot import %s", module_name)
            continue
        loaded.append(module_name)
    return loaded
