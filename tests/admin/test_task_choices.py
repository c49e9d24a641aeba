"""The schedule form's task list: ``discover_task_functions``."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import override_settings
from model_bakery import baker

from django_pq.admin.periodic_form import task_choices
from django_pq.models import Periodic
from django_pq.task_paths import discover_task_functions

pytestmark = pytest.mark.django_db


def test_lists_functions_of_installed_apps_tasks_modules() -> None:
    choices = dict(discover_task_functions())
    assert choices["tests.testapp.tasks:add"] == "tests.testapp.tasks.add"
    assert choices["tests.testapp.tasks:async_add"] == "async tests.testapp.tasks.async_add"
    assert not any(path.startswith("django_pq") for path in choices)


@override_settings(PQ_ALLOWED_MODULES=["tests.admin.sample_app", "tests.nowhere"])
def test_only_functions_defined_in_the_module() -> None:
    assert discover_task_functions() == [
        (
            "tests.admin.sample_app.tasks:defined_async",
            "async tests.admin.sample_app.tasks.defined_async",
        ),
        ("tests.admin.sample_app.tasks:defined_here", "tests.admin.sample_app.tasks.defined_here"),
    ]


@override_settings(PQ_ALLOWED_MODULES=["tests.admin.sample_app.tasks"])
def test_an_allowed_tasks_module_stands_for_itself() -> None:
    assert [path for path, _ in discover_task_functions()] == [
        "tests.admin.sample_app.tasks:defined_async",
        "tests.admin.sample_app.tasks:defined_here",
    ]


@override_settings(PQ_ALLOWED_MODULES=["tests.admin.sample_app"])
def test_functions_named_by_existing_schedules_stay_choosable() -> None:
    baker.make(
        Periodic, name="tests.admin.sample_app.tasks:removed_since", run_every=dt.timedelta(1)
    )
    choices = dict(task_choices())
    assert choices["tests.admin.sample_app.tasks:removed_since"] == (
        "tests.admin.sample_app.tasks:removed_since"
    )
    assert "tests.admin.sample_app.tasks:defined_here" in choices


def test_functions_declared_with_pq_task_are_choosable_wherever_they_live() -> None:
    import tests.testapp.policy_tasks  # noqa: F401 - declared tasks, not in a `tasks` module

    choices = dict(task_choices())
    assert "tests.testapp.policy_tasks:declared_plain" in choices
    assert "tests.testapp.policy_tasks:die" not in choices  # not declared, not discovered
