"""django-pq: durable background tasks for Django on PostgreSQL.

The public API, importable as ``import django_pq as pq``. Names are loaded on first use,
so importing ``django_pq`` (say, from settings.py) does not touch the app registry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "enqueue": "django_pq.enqueueing",
    "enqueue_many": "django_pq.enqueueing",
    "prepare": "django_pq.enqueueing",
    "upsert": "django_pq.enqueueing",
    "cancel": "django_pq.enqueueing",
    "retry": "django_pq.enqueueing",
    "PreparedTask": "django_pq.enqueueing",
    "schedule": "django_pq.schedules",
    "unschedule": "django_pq.schedules",
    "pause": "django_pq.schedules",
    "resume": "django_pq.schedules",
    "task": "django_pq.declared_tasks",
    "Retry": "django_pq.retry_policy",
    "RetryLater": "django_pq.retry_policy",
    "current_task": "django_pq.context",
    "set_progress": "django_pq.context",
    "TaskContext": "django_pq.context",
    "chain": "django_pq.dependencies",
    "batch": "django_pq.dependencies",
    "cancel_batch": "django_pq.dependencies",
    "retry_batch": "django_pq.dependencies",
    "BatchHandle": "django_pq.dependencies",
    "pause_key": "django_pq.limits",
    "resume_key": "django_pq.limits",
    "sync_limits": "django_pq.limits",
    "periodic": "django_pq.declared",
    "sync_schedules": "django_pq.declared",
    "Priority": "django_pq.models",
    "Status": "django_pq.models",
    "ErrorCode": "django_pq.models",
    "Task": "django_pq.models",
    "Periodic": "django_pq.models",
    "Worker": "django_pq.models",
    "PQError": "django_pq.exceptions",
    "TaskRefused": "django_pq.exceptions",
    "NotATaskFunction": "django_pq.exceptions",
    "UnserializableArgument": "django_pq.exceptions",
    "InvalidSchedule": "django_pq.exceptions",
    "DuplicateClientId": "django_pq.exceptions",
    "PayloadError": "django_pq.exceptions",
    "TimeLimitExceeded": "django_pq.exceptions",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from django_pq.context import TaskContext, current_task, set_progress
    from django_pq.declared import periodic, sync_schedules
    from django_pq.declared_tasks import task
    from django_pq.dependencies import BatchHandle, batch, cancel_batch, chain, retry_batch
    from django_pq.enqueueing import (
        PreparedTask,
        cancel,
        enqueue,
        enqueue_many,
        prepare,
        retry,
        upsert,
    )
    from django_pq.exceptions import (
        DuplicateClientId,
        InvalidSchedule,
        NotATaskFunction,
        PayloadError,
        PQError,
        TaskRefused,
        TimeLimitExceeded,
        UnserializableArgument,
    )
    from django_pq.limits import pause_key, resume_key, sync_limits
    from django_pq.models import ErrorCode, Periodic, Priority, Status, Task, Worker
    from django_pq.retry_policy import Retry, RetryLater
    from django_pq.schedules import pause, resume, schedule, unschedule


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'django_pq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
