"""System checks: each bad value is reported under its own id, the defaults under none."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.conf import settings
from django.core.checks import Error, run_checks
from django.core.management import call_command
from django.test import override_settings

from django_pq.checks import (
    check_allowed_modules_in_project,
    check_database,
    check_heartbeat_within_lease,
    check_settings,
    check_unknown,
)
from django_pq.conf import SETTINGS, Setting
from django_pq.worker.config import ConfigError, WorkerConfig

# Values no PQ_* setting accepts: a string where a number is expected, a negative number
# where a string is expected, and so on. Each setting gets the first value it refuses.
_CANDIDATE_BAD_VALUES: tuple[Any, ...] = (-1, "", "not valid!", 0, 1.5, True, ["..x"], None)


def _bad_value(setting: Setting) -> Any:
    for value in _CANDIDATE_BAD_VALUES:
        if not setting.is_valid(value):
            return value
    raise AssertionError(f"no candidate value is invalid for {setting.name}")


def _ids(messages: list[Any]) -> list[str]:
    return [message.id for message in messages]


def _pq_messages() -> list[Any]:
    """What the registered checks say about django-pq, as ``manage.py check`` runs them."""
    return [message for message in run_checks() if (message.id or "").startswith("django_pq.")]


@contextmanager
def _databases(**databases: dict[str, Any]) -> Iterator[None]:
    """Override DATABASES (Django warns that doing so is unusual; these checks only read it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Overriding setting DATABASES", UserWarning)
        with override_settings(DATABASES={**settings.DATABASES, **databases}):
            yield


def test_defaults_give_no_messages() -> None:
    assert _pq_messages() == []


def test_manage_py_check_passes_with_defaults() -> None:
    call_command("check", "--fail-level", "WARNING", verbosity=0)


@pytest.mark.parametrize("setting", SETTINGS, ids=[setting.name for setting in SETTINGS])
def test_every_default_is_valid(setting: Setting) -> None:
    assert setting.is_valid(setting.default), f"{setting.name}'s default fails its own rule"


@pytest.mark.parametrize("setting", SETTINGS, ids=[setting.name for setting in SETTINGS])
def test_invalid_setting_gives_its_own_id(setting: Setting) -> None:
    bad = _bad_value(setting)
    with override_settings(**{setting.name: bad}):
        messages = check_settings()
        registered = _pq_messages()
    assert _ids(messages) == [setting.check_id]
    (error,) = messages
    assert isinstance(error, Error)
    assert setting.name in error.msg
    assert repr(bad) in error.msg
    assert setting.expected in error.msg
    assert error.hint is not None
    assert f"Set {setting.name} to" in error.hint
    # Registered, so `manage.py check` reports it (a bad PQ_DATABASE is not also E001).
    assert _ids(registered) == [setting.check_id]


def test_check_ids_are_unique() -> None:
    ids = [setting.check_id for setting in SETTINGS]
    assert len(ids) == len(set(ids))
    assert not {"django_pq.E001", "django_pq.E021"} & set(ids)


def test_several_invalid_settings_are_all_reported() -> None:
    with override_settings(PQ_MAX_ATTEMPTS=0, PQ_PICKLE="yes", PQ_NOTIFY_CHANNEL="bad channel"):
        assert sorted(_ids(check_settings())) == [
            "django_pq.E004",
            "django_pq.E007",
            "django_pq.E008",
        ]


@override_settings(PQ_DATABASE="jobs")
def test_missing_database_alias_is_e001() -> None:
    (error,) = check_database()
    assert error.id == "django_pq.E001"
    assert "'jobs'" in error.msg
    assert "'default'" in error.msg  # names the aliases that do exist
    assert "django.db.backends.postgresql" in str(error.hint)


@override_settings(PQ_DATABASE="lite")
def test_non_postgres_database_is_e001() -> None:
    with _databases(lite={"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}):
        messages = check_database()
        registered = _pq_messages()
    (error,) = messages
    assert error.id == "django_pq.E001"
    assert "sqlite" in error.msg
    assert "django.db.backends.postgresql" in str(error.hint)
    assert _ids(registered) == ["django_pq.E001"]


@override_settings(PQ_DATABASE="broken")
def test_unloadable_engine_is_e001() -> None:
    with _databases(broken={"ENGINE": "no.such.backend"}):
        (error,) = check_database()
    assert error.id == "django_pq.E001"
    assert "no.such.backend" in error.msg


@override_settings(PQ_DATABASE="other")
def test_second_postgres_alias_passes() -> None:
    with _databases(other=dict(settings.DATABASES["default"])):
        assert check_database() == []


@pytest.mark.parametrize(
    ("heartbeat", "lease"),
    [(15.0, 30.0), (16, 30), (30.0, 30.0), (60, 30)],
)
def test_heartbeat_not_below_half_lease_is_e021(heartbeat: float, lease: float) -> None:
    with override_settings(PQ_HEARTBEAT_INTERVAL=heartbeat, PQ_LEASE=lease):
        messages = check_heartbeat_within_lease()
        registered = _pq_messages()
    assert _ids(messages) == ["django_pq.E021"]
    assert "PQ_HEARTBEAT_INTERVAL" in messages[0].msg
    assert "PQ_LEASE" in messages[0].msg
    assert _ids(registered) == ["django_pq.E021"]


@pytest.mark.parametrize(("heartbeat", "lease"), [(14.9, 30.0), (1, 3), (5.0, 30.0)])
def test_heartbeat_below_half_lease_passes(heartbeat: float, lease: float) -> None:
    with override_settings(PQ_HEARTBEAT_INTERVAL=heartbeat, PQ_LEASE=lease):
        assert check_heartbeat_within_lease() == []


def test_e021_stays_quiet_when_a_value_is_itself_invalid() -> None:
    with override_settings(PQ_HEARTBEAT_INTERVAL="often", PQ_LEASE=30):
        assert check_heartbeat_within_lease() == []
        assert _ids(_pq_messages()) == ["django_pq.E012"]


@override_settings(PQ_MAX_ATTEMPT=3)
def test_unknown_pq_setting_is_w001_with_a_suggestion() -> None:
    (warning,) = check_unknown()
    assert warning.id == "django_pq.W001"
    assert "PQ_MAX_ATTEMPT " in warning.msg
    assert "Did you mean PQ_MAX_ATTEMPTS?" in str(warning.hint)


def test_allowed_modules_outside_the_project_are_warned_about() -> None:
    allowed = [
        "tests.testapp",
        "django_pq.worker.children",
        "json",
        "django_tasks",
        "sys",
        "nowhere_x",
    ]
    with override_settings(PQ_ALLOWED_MODULES=allowed):
        warnings = check_allowed_modules_in_project()
    assert {warning.id for warning in warnings} == {"django_pq.W002"}
    named = [warning.msg.split("'")[1] for warning in warnings]
    assert named == ["django_pq.worker.children", "json", "django_tasks", "sys", "nowhere_x"]
    assert "SILENCED_SYSTEM_CHECKS" in (warnings[0].hint or "")
    with override_settings(PQ_ALLOWED_MODULES=["tests.testapp"]):
        assert check_allowed_modules_in_project() == []
    assert check_allowed_modules_in_project() == []  # the default needs no warning


@pytest.mark.parametrize(("heartbeat", "lease"), [(15.0, 30.0), (14.9, 30.0), (10.0, 30.0)])
def test_the_worker_and_check_e021_draw_the_line_in_one_place(
    heartbeat: float, lease: float
) -> None:
    with override_settings(PQ_HEARTBEAT_INTERVAL=heartbeat, PQ_LEASE=lease):
        refused_by_check = bool(check_heartbeat_within_lease())
        try:
            WorkerConfig.from_settings()
            refused_by_worker = False
        except ConfigError:
            refused_by_worker = True
    assert refused_by_check == refused_by_worker == (heartbeat >= lease / 2)
