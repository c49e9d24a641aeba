"""The default allow-list is the project's own apps: django-pq, third-party packages and the
standard library run only when named in PQ_ALLOWED_MODULES."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

import django_pq as pq
from django_pq import task_paths
from django_pq.models import ErrorCode, Status, Task
from django_pq.task_paths import allowed_modules, resolve
from tests.worker import conftest as worker_fixtures
from tests.worker.conftest import WorkerProcess, run_burst

start_worker = worker_fixtures.start_worker  # the real worker, as in tests/worker/

#: An app installed with pip, in site-packages, on every supported Django.
WITH_A_THIRD_PARTY_APP = [*settings.INSTALLED_APPS, "django.contrib.humanize"]

#: A process group id no process can have, so kill_group signals nothing when it does run.
NO_SUCH_GROUP = 2**30


def hostile_rows() -> dict[str, tuple[str, list[Any]]]:
    """Rows a database writer could add, each naming a function outside the project."""
    return {
        "django-pq's process killer": ("django_pq.worker.children:kill_group", [NO_SUCH_GROUP]),
        "django-pq's own helper": ("django_pq.task_paths:allowed_modules", []),
        "the standard library": ("json:dumps", [[1, 2]]),
        "a pip-installed app": ("django.contrib.humanize.templatetags.humanize:intcomma", [1000]),
        "a third-party package": ("django.utils.text:slugify", ["Hello World"]),
    }


def run_hostile_rows(
    start_worker: Callable[..., WorkerProcess], **settings: Any
) -> dict[str, Task]:
    """Write the rows, run a worker with ``settings`` to completion, return them as it left them."""
    ids = {
        label: Task.objects.create(name=name, payload={"args": args, "kwargs": {}}).pk
        for label, (name, args) in hostile_rows().items()
    }
    run_burst(start_worker, settings={"INSTALLED_APPS": WITH_A_THIRD_PARTY_APP, **settings})
    return {label: Task.objects.get(pk=pk) for label, pk in ids.items()}


def test_the_default_is_the_projects_apps_only() -> None:
    assert allowed_modules() == ("tests.testapp",)
    with override_settings(INSTALLED_APPS=WITH_A_THIRD_PARTY_APP):
        assert allowed_modules() == ("tests.testapp",)


def test_an_app_outside_base_dir_is_not_the_projects(tmp_path: Path) -> None:
    with override_settings(BASE_DIR=tmp_path):
        assert allowed_modules() == ()
    with override_settings(BASE_DIR=Path(__file__).resolve().parents[1]):
        assert allowed_modules() == ("tests.testapp",)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("django_pq.worker.children:kill_group", "part of django-pq itself"),
        ("django_pq.task_paths:resolve", "part of django-pq itself"),
        ("json:dumps", "outside the project directory"),
        ("django.core.management:call_command", "site-packages"),
        ("croniter:croniter", "site-packages"),
    ],
)
def test_resolving_a_name_outside_the_project_says_why(path: str, reason: str) -> None:
    with pytest.raises(pq.NotATaskFunction) as refused:
        resolve(path)
    message = str(refused.value)
    assert reason in message and "PQ_ALLOWED_MODULES" in message


def test_enqueueing_django_pqs_own_function_is_refused(db: None) -> None:
    with pytest.raises(pq.NotATaskFunction, match="part of django-pq itself"):
        pq.enqueue(task_paths.allowed_modules)
    with override_settings(PQ_ALLOWED_MODULES=["tests.testapp", "django_pq.task_paths"]):
        task = pq.enqueue(task_paths.allowed_modules)
        assert task.name == "django_pq.task_paths:allowed_modules"


def test_a_worker_runs_none_of_them_by_default(start_worker: Callable[..., WorkerProcess]) -> None:
    for label, task in run_hostile_rows(start_worker).items():
        assert (task.status, task.error_code) == (Status.FAILED, ErrorCode.UNKNOWN_TASK), label
        assert "PQ_ALLOWED_MODULES" in task.error and "own apps" in task.error, task.error


def test_a_worker_runs_them_when_they_are_named(start_worker: Callable[..., WorkerProcess]) -> None:
    allowed = [
        "tests.testapp",
        "django_pq.worker.children",
        "django_pq.task_paths",
        "json",
        "django.contrib.humanize",
        "django.utils.text",
    ]
    ran = run_hostile_rows(start_worker, PQ_ALLOWED_MODULES=allowed)
    for label, task in ran.items():
        assert task.status == Status.COMPLETED, (label, task.error)
    assert ran["a third-party package"].result == "hello-world"
    assert ran["the standard library"].result == json.dumps([1, 2])
    assert ran["django-pq's own helper"].decoded_result() == tuple(allowed)
