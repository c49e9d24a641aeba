"""Fixtures for the admin tests: staff users with chosen permissions, and action posts."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.contrib.messages import get_messages
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse
from model_bakery import baker

from django_pq.admin.permissions import PERIODIC_PERMISSIONS, TASK_PERMISSIONS
from django_pq.models import Periodic, Status, Task, Worker


def permission(codename: str) -> Permission:
    """The permission ``django_pq.<codename>`` (declared in the models' ``Meta.permissions``)."""
    names = dict(TASK_PERMISSIONS + PERIODIC_PERMISSIONS)
    model: type[Task | Periodic | Worker] = Task
    if "periodic" in codename:
        model = Periodic
    elif "worker" in codename:
        model = Worker
    content_type = ContentType.objects.get_for_model(model)
    found, _ = Permission.objects.get_or_create(
        codename=codename,
        content_type=content_type,
        defaults={"name": names.get(codename, codename)},
    )
    return found


@pytest.fixture
def make_staff(db: None) -> Callable[..., User]:
    """A staff user (not superuser) holding exactly the given ``django_pq`` codenames."""

    def make(*codenames: str) -> User:
        user = User.objects.create_user(
            username=f"staff-{uuid.uuid4().hex[:8]}", password="pw", is_staff=True
        )
        user.user_permissions.set([permission(codename) for codename in codenames])
        return user

    return make


@pytest.fixture
def staff_client(make_staff: Callable[..., User]) -> Callable[..., Client]:
    """A logged-in client for a staff user with the given codenames."""

    def make(*codenames: str, enforce_csrf_checks: bool = False) -> Client:
        client = Client(enforce_csrf_checks=enforce_csrf_checks)
        client.force_login(make_staff(*codenames))
        return client

    return make


VIEW_TASKS = ("view_task", "view_periodic", "view_worker", "view_flowkey", "view_limit")


def make_task(status: str = Status.PENDING, **fields: Any) -> Task:
    """A task row in ``status`` with the fields that status needs."""
    defaults: dict[str, Any] = {
        "name": "tests.testapp.tasks:add",
        "payload": {"args": [1, 2], "kwargs": {}},
        "queue": "default",
        "status": status,
        "error": "",
        "error_code": "",
    }
    if status == Status.RUNNING:
        defaults["run_token"] = uuid.uuid4()
        defaults["worker_id"] = uuid.uuid4()
    return baker.make(Task, **{**defaults, **fields})


def post_action(
    client: Client, model: str, action: str, objects: Iterable[Any], **extra: Any
) -> HttpResponse:
    """POST an admin action on the changelist of ``model``, as the action form does."""
    response: HttpResponse = client.post(
        reverse(f"admin:django_pq_{model}_changelist"),
        {
            "action": action,
            "_selected_action": [str(obj.pk) for obj in objects],
            "index": 0,
            **extra,
        },
        follow=True,
    )
    return response


def messages_of(response: HttpResponse) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


# The real worker, as a process: the browser tests watch it run what the admin started.
from tests.admin.browser import browser, static_root  # noqa: E402, F401
from tests.worker.conftest import start_worker  # noqa: E402, F401
