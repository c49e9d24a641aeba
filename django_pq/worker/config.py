"""The worker's configuration: flags and settings, validated once, then frozen."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from django_pq import conf
from django_pq.conf import heartbeat_fits_lease, pq_settings
from django_pq.models import Priority


class ConfigError(ValueError):
    """A worker option is out of range; the message names the flag and what it accepts."""


#: WorkerConfig attributes that a setting supplies (and a flag, where named, overrides):
#: attribute -> (setting, the flag's name in messages).
_FROM_SETTINGS: dict[str, tuple[str, str | None]] = {
    "max_runtime": ("PQ_MAX_RUNTIME", "--max-runtime"),
    "max_memory_mb": ("PQ_MAX_MEMORY", "--max-memory"),
    "drain_timeout": ("PQ_DRAIN_TIMEOUT", "--drain-timeout"),
    "poll_interval": ("PQ_POLL_INTERVAL", "--poll-interval"),
    "listen": ("PQ_LISTEN", None),
    "lease": ("PQ_LEASE", None),
    "heartbeat_interval": ("PQ_HEARTBEAT_INTERVAL", None),
    "kill_grace": ("PQ_KILL_GRACE", None),
    "retry_delay": ("PQ_RETRY_DELAY", None),
    "retry_max_delay": ("PQ_RETRY_MAX_DELAY", None),
    "retention": ("PQ_RETENTION", None),
    "error_max_length": ("PQ_ERROR_MAX_LENGTH", None),
    "database": ("PQ_DATABASE", None),
    "channel": ("PQ_NOTIFY_CHANNEL", None),
}


def parse_priority(value: str | int, flag: str = "--priority") -> int:
    """``"high"``/``"HIGH"`` or ``"75"`` → 75; anything else is a :class:`ConfigError`."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        text = str(value).strip()
        if text.upper() in Priority.__members__:
            return int(Priority[text.upper()])
        try:
            number = int(text)
        except ValueError:
            names = ", ".join(level.name.lower() for level in Priority)
            raise ConfigError(
                f"{flag} {value!r} is neither a priority name ({names}) nor a number 0..100."
            ) from None
    if not 0 <= number <= 100:
        raise ConfigError(f"{flag} {value!r} is outside 0..100.")
    return number


@dataclass(frozen=True)
class WorkerConfig:
    """Everything one ``pq_worker`` process needs to know, checked at construction."""

    concurrency: int = field(default_factory=lambda: os.cpu_count() or 1)
    queues: tuple[str, ...] = ()
    priorities: tuple[int, ...] = ()
    min_priority: int | None = None
    max_runtime: float | None = conf.default("PQ_MAX_RUNTIME")
    max_memory_mb: float | None = conf.default("PQ_MAX_MEMORY")
    drain_timeout: float = conf.default("PQ_DRAIN_TIMEOUT")
    poll_interval: float = conf.default("PQ_POLL_INTERVAL")
    burst: bool = False
    max_tasks: int | None = None
    tasks_per_child: int = 1
    max_child_memory_mb: float | None = None
    listen: bool = conf.default("PQ_LISTEN")
    lease: float = conf.default("PQ_LEASE")
    heartbeat_interval: float = conf.default("PQ_HEARTBEAT_INTERVAL")
    kill_grace: float = conf.default("PQ_KILL_GRACE")
    retry_delay: float = conf.default("PQ_RETRY_DELAY")
    retry_max_delay: float = conf.default("PQ_RETRY_MAX_DELAY")
    retention: float | None = conf.default("PQ_RETENTION")
    error_max_length: int = conf.default("PQ_ERROR_MAX_LENGTH")
    database: str = conf.default("PQ_DATABASE")
    channel: str = conf.default("PQ_NOTIFY_CHANNEL")

    def __post_init__(self) -> None:
        _at_least("--concurrency", self.concurrency, 1)
        if self.max_tasks is not None:
            _at_least("--max-tasks", self.max_tasks, 1)
        _at_least("--tasks-per-child", self.tasks_per_child, 1)
        _positive("--max-child-memory", self.max_child_memory_mb, optional=True)
        # Options that override a setting follow that setting's rule (conf.SETTINGS).
        for attribute, (setting, flag) in _FROM_SETTINGS.items():
            problem = conf.invalid(setting, getattr(self, attribute), flag)
            if problem:
                raise ConfigError(problem)
        if not heartbeat_fits_lease(self.heartbeat_interval, self.lease):
            raise ConfigError(
                f"PQ_HEARTBEAT_INTERVAL ({self.heartbeat_interval}s) must be less than half of "
                f"PQ_LEASE ({self.lease}s), so a worker renews its lease at least twice "
                "before it lapses (check django_pq.E021)."
            )
        for queue in self.queues:
            if not queue or len(queue) > 100:
                raise ConfigError(f"--queue {queue!r} must be 1 to 100 characters long.")
        for priority in self.priorities:
            parse_priority(priority)
        if self.min_priority is not None:
            parse_priority(self.min_priority, "--min-priority")

    @classmethod
    def from_settings(cls, **options: object) -> WorkerConfig:
        """A config from the ``PQ_*`` settings, with the given options (flags) on top."""
        defaults: dict[str, object] = {
            attribute: getattr(pq_settings, setting.removeprefix("PQ_"))
            for attribute, (setting, _) in _FROM_SETTINGS.items()
        }
        defaults.update({name: value for name, value in options.items() if value is not None})
        return cls(**defaults)  # type: ignore[arg-type]

    @property
    def lease_margin(self) -> float:
        """How long before its lease lapses a worker that cannot renew kills its children."""
        return self.heartbeat_interval

    def serves(self, queue: str) -> bool:
        return not self.queues or queue in self.queues

    def describe(self) -> str:
        parts = [f"concurrency={self.concurrency}"]
        parts.append(f"queues={','.join(self.queues) or '*'}")
        if self.priorities:
            parts.append(f"priorities={','.join(map(str, self.priorities))}")
        if self.min_priority is not None:
            parts.append(f"min_priority={self.min_priority}")
        if self.burst:
            parts.append("burst")
        return " ".join(parts)


def _positive(flag: str, value: float | None, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or isinstance(value, bool) or not value > 0:
        raise ConfigError(f"{flag} must be a number greater than 0, got {value!r}.")


def _at_least(flag: str, value: float, minimum: float) -> None:
    if isinstance(value, bool) or not value >= minimum:
        raise ConfigError(f"{flag} must be at least {minimum}, got {value!r}.")


def parse_priorities(values: Iterable[str]) -> tuple[int, ...]:
    return tuple(sorted({parse_priority(value) for value in values}))
