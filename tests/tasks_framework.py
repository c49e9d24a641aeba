"""Django's tasks framework for the tests: built in on Django >= 6.0, the django-tasks
backport on Django 5.2. One import site, so the test modules run unchanged on both."""

from __future__ import annotations

from typing import Any

try:
    from django.tasks import TaskContext, TaskResultStatus, task, task_backends
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
    from django.tasks.signals import task_enqueued, task_finished, task_started
except ImportError:  # Django 5.2 with the django-tasks backport
    from django_tasks import task, task_backends
    from django_tasks.base import TaskContext, TaskResultStatus
    from django_tasks.exceptions import InvalidTaskError as InvalidTask
    from django_tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch
    from django_tasks.signals import task_enqueued, task_finished, task_started

__all__ = [
    "PQ_TASKS",
    "InvalidTask",
    "TaskContext",
    "TaskResultDoesNotExist",
    "TaskResultMismatch",
    "TaskResultStatus",
    "pq_settings_for",
    "task",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]

#: ``TASKS`` naming PQBackend, with any queue name allowed.
PQ_TASKS = {"default": {"BACKEND": "django_pq.backend.PQBackend", "QUEUES": []}}


def pq_settings_for(module: str) -> dict[str, Any]:
    """Settings under which ``module``'s ``@task`` functions run on PQBackend's worker."""
    return {"TASKS": PQ_TASKS, "PQ_ALLOWED_MODULES": ["tests.testapp", module]}
