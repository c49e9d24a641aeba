"""Lifecycle hook receivers for tests: they record where they ran."""

from __future__ import annotations

import os
from typing import Any

from django.dispatch import receiver

from django_pq.signals import task_finished, task_started
from tests.testapp.models import RunLog

HOOKED = "tests.testapp.tasks:pid"


@receiver(task_started)
def record_start(sender: Any, task: Any, **kwargs: Any) -> None:
    if task.name == HOOKED:
        RunLog.objects.create(task_id=task.id, event="hook_started", pid=os.getpid())
    if task.name == "tests.testapp.tasks:echo" and task.kwargs.get("break_hook"):
        raise RuntimeError("hook failed on purpose")


@receiver(task_finished)
def record_finish(sender: Any, task: Any, status: str, **kwargs: Any) -> None:
    if task.name == HOOKED:
        RunLog.objects.create(task_id=task.id, event="hook_finished", pid=os.getpid(), value=status)
