"""The worker's configuration: flags and settings, validated once, then frozen."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from django_pq.conf import heartbeat_fits_lease, pq_settings
from django_pq.models import Priority


class ConfigError(ValueError):
    """A worker option is out of range; the message names the flag and what it accepts."""


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
    max_runtime: float | None = None
    max_memory_mb: float | None = None
    drain_timeout: float = 30.0
    poll_interval: float = 5.0
    burst: bool = False
    max_tasks: int | None = None
    tasks_per_child: int = 1
    max_child_memory_mb: float | None = None
    listen: bool = True
    lease: float = 30.0
    heartbeat_interval: float = 10.0
    kill_grace: float = 5.0
    retry_delay: float = 1.0
    retry_max_delay: float = 3600.0
    retention: float | None = 7 * 24 * 3600.0
    error_max_length: int = 65536
    database: str = "default"
    channel: str = "django_pq"

    def __post_init__(self) -> None:
        _at_least("--concurrency", self.concurrency, 1)
        _positive("--max-runtime", self.max_runtime, optional=True)
        _positive("--max-memory", self.max_memory_mb, optional=True)
        _at_least("--drain-timeout", self.drain_timeout, 0)
        _positive("--poll-interval", self.poll_interval)
        if self.max_tasks is not None:
            _at_least("--max-tasks", self.max_tasks, 1)
        _at_least("--tasks-per-child", self.tasks_per_child, 1)
        _positive("--max-child-memory", self.max_child_memory_mb, optional=True)
        _positive("PQ_LEASE", self.lease)
        _positive("PQ_HEARTBEAT_INTERVAL", self.heartbeat_interval)
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
            "max_runtime": pq_settings.MAX_RUNTIME,
            "max_memory_mb": pq_settings.MAX_MEMORY,
            "drain_timeout": pq_settings.DRAIN_TIMEOUT,
            "poll_interval": pq_settings.POLL_INTERVAL,
            "listen": pq_settings.LISTEN,
            "lease": pq_settings.LEASE,
            "heartbeat_interval": pq_settings.HEARTBEAT_INTERVAL,
            "kill_grace": pq_settings.KILL_GRACE,
            "retry_delay": pq_settings.RETRY_DELAY,
            "retry_max_delay": pq_settings.RETRY_MAX_DELAY,
            "retention": pq_settings.RETENTION,
            "error_max_length": pq_settings.ERROR_MAX_LENGTH,
            "database": pq_settings.DATABASE,
            "channel": pq_settings.NOTIFY_CHANNEL,
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
