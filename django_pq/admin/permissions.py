"""The permissions that gate each admin action, one per kind of intervention.

The custom codenames are declared in the models' ``Meta.permissions``; ``delete_task`` is
Django's own. A superuser has them all; other staff need them granted, so a view-only
operator can watch the queue without being able to change it.
"""

from __future__ import annotations

from django.http import HttpRequest

APP_LABEL = "django_pq"

RETRY_TASK = "retry_task"
CANCEL_TASK = "cancel_task"
RUN_TASK_NOW = "run_task_now"
DELETE_TASK = "delete_task"
PAUSE_PERIODIC = "pause_periodic"
RUN_PERIODIC_NOW = "run_periodic_now"
PAUSE_FLOWKEY = "pause_flowkey"

#: (codename, name) pairs for ``Meta.permissions``: Task's, then Periodic's.
TASK_PERMISSIONS = (
    (RETRY_TASK, "Can retry failed or cancelled tasks"),
    (CANCEL_TASK, "Can cancel pending or running tasks"),
    (RUN_TASK_NOW, "Can run scheduled tasks now"),
)
PERIODIC_PERMISSIONS = (
    (PAUSE_PERIODIC, "Can pause and resume periodic schedules"),
    (RUN_PERIODIC_NOW, "Can run periodic schedules now"),
)


def has_pq_perm(request: HttpRequest, codename: str) -> bool:
    """Whether the request's user holds ``django_pq.<codename>``."""
    return request.user.has_perm(f"{APP_LABEL}.{codename}")
