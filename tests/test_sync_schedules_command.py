"""``manage.py pq_sync_schedules`` prints what it did, and nothing at ``-v 0``."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.test.utils import override_settings

from django_pq import declared

pytestmark = pytest.mark.django_db

DECLARED = [{"task": "tests.testapp.tasks.add", "args": [1, 2], "run_every": 300}]


@pytest.fixture(autouse=True)
def _only_settings_schedules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(declared, "_DECORATED", [])


def sync(*args: str, verbosity: int) -> str:
    out = io.StringIO()
    call_command("pq_sync_schedules", *args, verbosity=verbosity, stdout=out)
    return out.getvalue()


@override_settings(PQ_SCHEDULES=DECLARED)
def test_verbosity_0_prints_nothing() -> None:
    assert sync(verbosity=0) == ""
    assert sync("--prune", verbosity=0) == ""


@override_settings(PQ_SCHEDULES=DECLARED)
def test_the_default_verbosity_lists_each_schedule_and_a_summary() -> None:
    assert sync(verbosity=1).splitlines() == [
        "created: tests.testapp.tasks:add",
        "1 created, 0 updated, 0 unchanged, 0 removed",
    ]
