"""django-pq in the Django admin: the control room for tasks, schedules and workers.

Importing this module registers :class:`TaskAdmin`, :class:`PeriodicAdmin` and
:class:`WorkerAdmin`, flow control's :class:`FlowKeyAdmin` and :class:`LimitAdmin`, and
:class:`BatchAdmin` for batches and chains, with the default admin site (Django's admin
autodiscovery does that).
The task admin also serves the overview page at ``admin/django_pq/task/overview/``.
"""

from django_pq.admin.batches import BatchAdmin
from django_pq.admin.flow import FlowKeyAdmin, LimitAdmin
from django_pq.admin.periodic import PeriodicAdmin
from django_pq.admin.tasks import TaskAdmin
from django_pq.admin.workers import WorkerAdmin

__all__ = ["BatchAdmin", "FlowKeyAdmin", "LimitAdmin", "PeriodicAdmin", "TaskAdmin", "WorkerAdmin"]
