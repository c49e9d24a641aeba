"""django-pq's settings: typed, documented, read lazily.

Every setting is optional. Nothing is read at import time, so
``override_settings`` works in tests and a project may set them after importing
``django_pq``. Each setting carries its own system check id (see ``checks.py``)
and its reference entry (``docs/reference/settings.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings


def _positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _optional_positive_number(value: Any) -> bool:
    return value is None or _positive_number(value)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _non_negative_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _bool(value: Any) -> bool:
    return isinstance(value, bool)


def _identifier(value: Any) -> bool:
    # Postgres counts a name's bytes: pg_notify() refuses a channel past 63 of them.
    return isinstance(value, str) and value.isidentifier() and len(value.encode()) <= 63


def _non_empty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and len(value) <= 100


def _module_list(value: Any) -> bool:
    return value is None or (
        isinstance(value, list | tuple)
        and all(isinstance(item, str) and item and not item.startswith(".") for item in value)
    )


#: The longest lease a worker may hold, in seconds. A lease further ahead than this is no
#: lease any worker wrote: the reaper treats its holder as dead (a hand-written lease of
#: year 9999 must not keep a dead worker's tasks running forever).
LONGEST_LEASE = 86400.0


def _lease(value: Any) -> bool:
    return _positive_number(value) and value <= LONGEST_LEASE


def heartbeat_fits_lease(heartbeat: float, lease: float) -> bool:
    """The one rule for both settings (check E021 and the worker's own config): a worker
    renews its lease at least twice per lease, so one slow heartbeat cannot let it lapse."""
    return heartbeat < lease / 2


@dataclass(frozen=True)
class Setting:
    """One ``PQ_*`` setting: its default, the rule its value must follow, and its check id."""

    name: str
    default: Any
    is_valid: Callable[[Any], bool]
    expected: str
    check_id: str
    doc: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "PQ_DATABASE",
        "default",
        _non_empty_str,
        "a database alias from DATABASES",
        "django_pq.E002",
        "Database alias that holds the pq tables. Enqueueing joins this alias's transaction.",
    ),
    Setting(
        "PQ_DEFAULT_QUEUE",
        "default",
        _non_empty_str,
        "a non-empty string of at most 100 characters",
        "django_pq.E003",
        "Queue used when enqueue() is not given one.",
    ),
    Setting(
        "PQ_MAX_ATTEMPTS",
        1,
        _positive_int,
        "an integer >= 1",
        "django_pq.E004",
        "Runs a task may get when it does not set max_attempts. 1 is pq's at-most-once.",
    ),
    Setting(
        "PQ_MAX_RUNTIME",
        None,
        _optional_positive_number,
        "None or a number of seconds > 0",
        "django_pq.E005",
        "Seconds a task may run when neither the task nor the worker sets a limit. "
        "None means no limit.",
    ),
    Setting(
        "PQ_ALLOWED_MODULES",
        None,
        _module_list,
        "None or a list of dotted module names",
        "django_pq.E006",
        "Modules whose functions may run as tasks. None allows the project's own apps: the "
        "installed apps inside the project directory (BASE_DIR, or the directory holding the "
        "settings module's package) and outside site-packages, django-pq itself excluded. "
        "A list replaces that default.",
    ),
    Setting(
        "PQ_PICKLE",
        False,
        _bool,
        "True or False",
        "django_pq.E007",
        "Allow arguments and results that JSON cannot carry to travel pickled, signed with a "
        "key derived from SECRET_KEY. Off by default: the database is not a code channel. "
        "A worker decodes pickled values only in the task's child process; every reader "
        "(the admin, Task.decoded_arguments(), get_result()) decodes them only when their "
        "signature is valid.",
    ),
    Setting(
        "PQ_NOTIFY_CHANNEL",
        "django_pq",
        _identifier,
        "a Postgres identifier (letters, digits, underscores; at most 63 bytes in UTF-8)",
        "django_pq.E008",
        "LISTEN/NOTIFY channel that enqueue signals and workers wait on.",
    ),
    Setting(
        "PQ_LISTEN",
        True,
        _bool,
        "True or False",
        "django_pq.E009",
        "Workers LISTEN for new tasks. Turn off behind a pooler in transaction mode, where "
        "LISTEN does not work; workers then rely on PQ_POLL_INTERVAL.",
    ),
    Setting(
        "PQ_POLL_INTERVAL",
        5.0,
        _positive_number,
        "a number of seconds > 0",
        "django_pq.E010",
        "Seconds between polls for ready tasks when PQ_LISTEN is off. With LISTEN on, "
        "workers wake on notifications and their heartbeat is the safety net.",
    ),
    Setting(
        "PQ_LEASE",
        30.0,
        _lease,
        f"a number of seconds > 0 and at most {LONGEST_LEASE:.0f} (a day)",
        "django_pq.E011",
        "Seconds a worker's heartbeat stays valid. Past it, other workers reap its tasks.",
    ),
    Setting(
        "PQ_HEARTBEAT_INTERVAL",
        10.0,
        _positive_number,
        "a number of seconds > 0, well below PQ_LEASE",
        "django_pq.E012",
        "Seconds between a worker's heartbeats. Each heartbeat is one transaction that also "
        "finds tasks of dead workers to reap, so it bounds how fast they are found.",
    ),
    Setting(
        "PQ_RETRY_DELAY",
        1.0,
        _non_negative_number,
        "a number of seconds >= 0",
        "django_pq.E014",
        "Base delay before a retry; it doubles with each attempt, with jitter.",
    ),
    Setting(
        "PQ_RETRY_MAX_DELAY",
        3600.0,
        _non_negative_number,
        "a number of seconds >= 0",
        "django_pq.E015",
        "Upper bound of the retry delay.",
    ),
    Setting(
        "PQ_RETENTION",
        7 * 24 * 3600.0,
        _optional_positive_number,
        "None or a number of seconds > 0",
        "django_pq.E016",
        "Seconds finished tasks are kept before workers prune them. None keeps them forever.",
    ),
    Setting(
        "PQ_DRAIN_TIMEOUT",
        30.0,
        _non_negative_number,
        "a number of seconds >= 0",
        "django_pq.E017",
        "Seconds a stopping worker lets running tasks finish before killing them.",
    ),
    Setting(
        "PQ_KILL_GRACE",
        5.0,
        _non_negative_number,
        "a number of seconds >= 0",
        "django_pq.E018",
        "Seconds between SIGTERM and SIGKILL when a task is stopped.",
    ),
    Setting(
        "PQ_MAX_MEMORY",
        None,
        _optional_positive_number,
        "None or a number of megabytes > 0",
        "django_pq.E019",
        "Memory limit per task child, in MB, when the worker is not given --max-memory.",
    ),
    Setting(
        "PQ_ERROR_MAX_LENGTH",
        65536,
        _positive_int,
        "an integer >= 1",
        "django_pq.E020",
        "Characters of error text and traceback kept per task.",
    ),
)

SETTINGS += (
    Setting(
        "PQ_DECLARED_TASKS_ONLY",
        False,
        _bool,
        "True or False",
        "django_pq.E023",
        "Workers run only declared task functions: @pq.task, @pq.periodic, PQ_SCHEDULES "
        "and django.tasks' @task. A row naming any other function fails as unknown_task, "
        "even inside PQ_ALLOWED_MODULES. Recommended: a database writer can then run only "
        "what the code declared a task.",
    ),
    Setting(
        "PQ_SCHEDULES",
        None,
        lambda value: value is None or isinstance(value, list | tuple),
        "None or a list of dicts with a 'task' key",
        "django_pq.E022",
        "Schedules declared in settings, synced by pq_sync_schedules and by workers on start: "
        "[{'task': 'shop.tasks.sync_inventory', 'run_every': timedelta(minutes=5)}, ...]. "
        "Each dict takes schedule()'s options plus 'args' and 'kwargs'.",
    ),
)

SETTINGS += (
    Setting(
        "PQ_LIMITS",
        None,
        lambda value: value is None or isinstance(value, dict),
        "None or a dict of flow key or pattern to limit",
        "django_pq.E024",
        "Flow limits by limit_key or glob pattern, enforced by the claim across all "
        "workers: {'stripe': {'concurrency': 5, 'rate': '100/m'}, 'customer:*': "
        "{'ordered': True}}. Options: concurrency, rate ('N/s', 'N/m', 'N/h'), burst, "
        "ordered, on_failure ('hold' or 'release'). Written to pq_limits by workers on "
        "start and by pq_limits --sync.",
    ),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}


def default(name: str) -> Any:
    """The default of the setting ``name`` (``"PQ_LEASE"``)."""
    return _BY_NAME[name].default


def invalid(name: str, value: Any, label: str | None = None) -> str | None:
    """Why ``value`` is not a valid ``name`` (``"PQ_LEASE"``), or None when it is. The one
    rule for a setting and for the worker flag that overrides it; ``label`` names the flag."""
    setting = _BY_NAME[name]
    if setting.is_valid(value):
        return None
    return f"{label or name} must be {setting.expected}; got {value!r}."


class PQSettings:
    """Attribute access to the ``PQ_*`` settings, with defaults, read on every access."""

    def __getattr__(self, attribute: str) -> Any:
        setting = _BY_NAME.get(f"PQ_{attribute}")
        if setting is None:
            raise AttributeError(f"django_pq has no setting PQ_{attribute}")
        return getattr(django_settings, setting.name, setting.default)

    # Annotations only (no values), so every read still goes through __getattr__.
    DATABASE: str
    DEFAULT_QUEUE: str
    MAX_ATTEMPTS: int
    MAX_RUNTIME: float | None
    ALLOWED_MODULES: list[str] | None
    PICKLE: bool
    NOTIFY_CHANNEL: str
    LISTEN: bool
    POLL_INTERVAL: float
    LEASE: float
    LIMITS: dict[str, dict[str, object]] | None
    HEARTBEAT_INTERVAL: float
    RETRY_DELAY: float
    RETRY_MAX_DELAY: float
    RETENTION: float | None
    DRAIN_TIMEOUT: float
    KILL_GRACE: float
    MAX_MEMORY: float | None
    ERROR_MAX_LENGTH: int
    SCHEDULES: list[dict[str, Any]] | None
    DECLARED_TASKS_ONLY: bool


pq_settings = PQSettings()
