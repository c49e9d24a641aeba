"""Generic admin and form base classes, typed for mypy and plain at run time.

django-stubs makes ``ModelAdmin`` and ``ModelForm`` generic, but Django's classes are not
subscriptable at run time (that would need ``django-stubs-ext``, which django-pq does not
depend on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django import forms
from django.contrib import admin

from django_pq.models import Periodic, Task, Worker

if TYPE_CHECKING:
    TaskModelAdmin = admin.ModelAdmin[Task]
    PeriodicModelAdmin = admin.ModelAdmin[Periodic]
    WorkerModelAdmin = admin.ModelAdmin[Worker]
    PeriodicModelForm = forms.ModelForm[Periodic]
else:
    TaskModelAdmin = PeriodicModelAdmin = WorkerModelAdmin = admin.ModelAdmin
    PeriodicModelForm = forms.ModelForm

__all__ = ["PeriodicModelAdmin", "PeriodicModelForm", "TaskModelAdmin", "WorkerModelAdmin"]
