"""System checks: the database must be PostgreSQL, and each PQ_* setting must be valid.

Every check id is documented in ``docs/reference/checks.md`` and never reused. The ids of
the per-setting checks live beside their settings in :mod:`django_pq.conf`; the others are
here:

- ``django_pq.E001``: ``PQ_DATABASE`` names no database in ``DATABASES``, or one that is not
  PostgreSQL.
- ``django_pq.E021``: ``PQ_HEARTBEAT_INTERVAL`` is not below half of ``PQ_LEASE``.
- ``django_pq.W001``: a ``PQ_*`` setting that django-pq does not know (usually a typo).
- ``django_pq.W002``: ``PQ_ALLOWED_MODULES`` names a module outside the project.
- ``django_pq.W003`` (``check --deploy`` only): ``PQ_DECLARED_TASKS_ONLY`` is off.
- ``django_pq.E024``: a ``PQ_LIMITS`` entry cannot be enforced (the message names it).
- ``django_pq.W004``: a ``PQ_LIMITS`` pattern matches no ``limit_key`` a ``@pq.task``
  declares (while no declared task derives its key from its arguments).

The checks read ``settings`` when they run, not at import, so ``override_settings`` works.
None of them opens a database connection.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.core.checks import Warning as CheckWarning
from django.core.exceptions import ImproperlyConfigured
from django.db.utils import load_backend

from django_pq.conf import SETTINGS, Setting, heartbeat_fits_lease
from django_pq.declared_tasks import declared_limit_keys
from django_pq.flow_limits import InvalidLimit, matches, parse_limits
from django_pq.task_paths import outside_project

__all__ = [
    "check_allowed_modules_in_project",
    "check_database",
    "check_heartbeat_within_lease",
    "check_settings",
    "check_unknown",
]

_BY_NAME = {setting.name: setting for setting in SETTINGS}
_POSTGRES_ENGINE = "django.db.backends.postgresql"


def _value(setting: Setting) -> Any:
    return getattr(settings, setting.name, setting.default)


def _is_valid(name: str) -> bool:
    setting = _BY_NAME[name]
    return setting.is_valid(_value(setting))


def _database_error(msg: str, hint: str) -> Error:
    return Error(msg, hint=hint, id="django_pq.E001")


@register()
def check_database(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """``django_pq.E001``: the ``PQ_DATABASE`` alias exists and its backend is PostgreSQL.

    The vendor is read from the backend's ``DatabaseWrapper`` class, so PostgreSQL backends
    that wrap Django's own (PostGIS, instrumented backends) pass, and no connection is made.
    """
    if not _is_valid("PQ_DATABASE"):
        return []  # django_pq.E002 already says what is wrong with the value.
    alias = _value(_BY_NAME["PQ_DATABASE"])
    databases: dict[str, dict[str, Any]] = settings.DATABASES
    if alias not in databases:
        known = ", ".join(repr(name) for name in databases) or "none"
        return [
            _database_error(
                f"PQ_DATABASE is {alias!r}, but DATABASES has no such alias (it has {known}).",
                "Set PQ_DATABASE to the alias of your PostgreSQL database, or add "
                f"DATABASES[{alias!r}] with ENGINE {_POSTGRES_ENGINE!r}.",
            )
        ]
    engine = databases[alias].get("ENGINE") or ""
    try:
        vendor = load_backend(engine).DatabaseWrapper.vendor if engine else ""
    except ImproperlyConfigured as error:
        return [
            _database_error(
                f"DATABASES[{alias!r}] has ENGINE {engine!r}, which cannot be loaded: {error}",
                f"django-pq needs PostgreSQL: use ENGINE {_POSTGRES_ENGINE!r} "
                "with psycopg 3 installed.",
            )
        ]
    if vendor != "postgresql":
        return [
            _database_error(
                f"django-pq needs PostgreSQL, but DATABASES[{alias!r}] (PQ_DATABASE) uses "
                f"{engine or 'no ENGINE'!r}, a {vendor or 'unknown'} backend.",
                f"Use ENGINE {_POSTGRES_ENGINE!r} for DATABASES[{alias!r}], or point "
                "PQ_DATABASE at a PostgreSQL database.",
            )
        ]
    return []


def _setting_error(setting: Setting, value: Any) -> Error:
    return Error(
        f"{setting.name} is {value!r}; it must be {setting.expected}.",
        hint=f"Set {setting.name} to {setting.expected}, or remove it to use the "
        f"default ({setting.default!r}).",
        id=setting.check_id,
    )


@register()
def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """One error per invalid ``PQ_*`` setting, with that setting's own check id."""
    errors: list[CheckMessage] = []
    for setting in SETTINGS:
        value = _value(setting)
        if not setting.is_valid(value):
            errors.append(_setting_error(setting, value))
    return errors


@register()
def check_heartbeat_within_lease(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """``django_pq.E021``: a worker renews its lease at least twice per lease.

    With one renewal per lease, a single slow heartbeat lets the lease lapse, and other
    workers reap tasks that are still running.
    """
    if not (_is_valid("PQ_HEARTBEAT_INTERVAL") and _is_valid("PQ_LEASE")):
        return []  # Their own checks report the bad values.
    heartbeat = _value(_BY_NAME["PQ_HEARTBEAT_INTERVAL"])
    lease = _value(_BY_NAME["PQ_LEASE"])
    if heartbeat_fits_lease(heartbeat, lease):
        return []
    return [
        Error(
            f"PQ_HEARTBEAT_INTERVAL ({heartbeat!r} s) must be less than half of PQ_LEASE "
            f"({lease!r} s), so a worker renews its lease at least twice before it lapses.",
            hint=f"Lower PQ_HEARTBEAT_INTERVAL below {lease / 2:g}, or raise PQ_LEASE above "
            f"{heartbeat * 2:g}. The defaults (10 and 30) renew three times per lease.",
            id="django_pq.E021",
        )
    ]


@register()
def check_unknown(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """``django_pq.W001``: a ``PQ_*`` setting django-pq does not know, which it ignores."""
    warnings: list[CheckMessage] = []
    for name in dir(settings):
        if not name.startswith("PQ_") or name in _BY_NAME:
            continue
        close = difflib.get_close_matches(name, _BY_NAME, n=1)
        suggestion = f"Did you mean {close[0]}? " if close else ""
        warnings.append(
            CheckWarning(
                f"{name} is not a django-pq setting, so it has no effect.",
                hint=f"{suggestion}The settings are listed in django-pq's settings reference; "
                "remove or rename this one.",
                id="django_pq.W001",
            )
        )
    return warnings


@register()
def check_allowed_modules_in_project(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """``django_pq.W002``: ``PQ_ALLOWED_MODULES`` names a module outside the project.

    Any function of an allowed module can be run, with any arguments, by whoever can write
    a row to ``pq_tasks``: django-pq's own modules, third-party packages and the standard
    library hold functions no one means to run that way. Modules are located without
    importing them.
    """
    if not _is_valid("PQ_ALLOWED_MODULES"):
        return []  # django_pq.E006 says what is wrong with the value.
    warnings: list[CheckMessage] = []
    for module in _value(_BY_NAME["PQ_ALLOWED_MODULES"]) or ():
        reason = outside_project(module)
        if not reason:
            continue
        warnings.append(
            CheckWarning(
                f"PQ_ALLOWED_MODULES names {module!r}, which is not part of your project "
                f"({reason}): anyone who can write a row to pq_tasks can run any of its "
                "functions with any arguments.",
                hint="Name only modules that hold your task functions, as narrowly as "
                "possible (a module such as 'django_pq.bench' rather than a whole package). "
                "If you mean it, silence this with "
                "SILENCED_SYSTEM_CHECKS = ['django_pq.W002'].",
                id="django_pq.W002",
            )
        )
    return warnings


@register(deploy=True)
def check_declared_tasks_only(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """``django_pq.W003`` (``manage.py check --deploy``): ``PQ_DECLARED_TASKS_ONLY`` is off,
    so a row may name any function of an allowed module, not only declared tasks."""
    if not _is_valid("PQ_DECLARED_TASKS_ONLY") or _value(_BY_NAME["PQ_DECLARED_TASKS_ONLY"]):
        return []
    return [
        CheckWarning(
            "PQ_DECLARED_TASKS_ONLY is off: whoever can write a row to pq_tasks can run any "
            "function of the allowed modules, not only those declared as tasks.",
            hint="Declare your task functions with @pq.task (or @pq.periodic, or "
            "django.tasks' @task) and set PQ_DECLARED_TASKS_ONLY = True.",
            id="django_pq.W003",
        )
    ]


@register()
def check_limits(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """``django_pq.E024``: each ``PQ_LIMITS`` entry must be enforceable; ``django_pq.W004``:
    a pattern no declared ``limit_key`` matches is probably a typo."""
    if not _is_valid("PQ_LIMITS"):  # not a dict: check_settings says so
        return []
    try:
        limits = parse_limits(getattr(settings, "PQ_LIMITS", None))
    except InvalidLimit as error:
        return [
            Error(
                str(error),
                hint="See docs/how-to/flow-control.md for what a limit takes.",
                id="django_pq.E024",
            )
        ]
    declared = declared_limit_keys()
    if declared is None:  # a declared task derives its key: any pattern may match
        return []
    return [
        CheckWarning(
            f"PQ_LIMITS[{limit.pattern!r}] matches no limit_key declared with @pq.task "
            f"(declared: {', '.join(map(repr, sorted(declared))) or 'none'}).",
            hint="Fix the pattern, or, when the keys are given at enqueue "
            "(pq.enqueue(..., limit_key=...)), silence it: "
            "SILENCED_SYSTEM_CHECKS = ['django_pq.W004'].",
            id="django_pq.W004",
        )
        for limit in limits
        if not any(matches(limit.pattern, key) for key in declared)
    ]
