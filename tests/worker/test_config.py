"""The worker's options follow the settings' own defaults and rules (conf.SETTINGS)."""

from __future__ import annotations

import dataclasses

import pytest

from django_pq import conf
from django_pq.worker.config import _FROM_SETTINGS, ConfigError, WorkerConfig


def test_every_option_a_setting_supplies_defaults_to_that_settings_default() -> None:
    defaults = {field.name: field.default for field in dataclasses.fields(WorkerConfig)}
    for attribute, (setting, _) in _FROM_SETTINGS.items():
        assert defaults[attribute] == conf.default(setting), attribute


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("lease", 86400.5, "PQ_LEASE must be a number of seconds > 0 and at most 86400"),
        ("lease", float("nan"), "PQ_LEASE must be"),
        ("max_runtime", float("nan"), "--max-runtime must be None or a number of seconds > 0"),
        ("drain_timeout", -1.0, "--drain-timeout must be a number of seconds >= 0"),
        ("channel", "not an identifier", "PQ_NOTIFY_CHANNEL must be"),
        # 40 characters, 80 bytes: pg_notify() refuses a channel name past 63 bytes.
        ("channel", "é" * 40, "PQ_NOTIFY_CHANNEL must be"),
    ],
)
def test_an_option_is_refused_by_the_rule_of_its_setting(option, value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        WorkerConfig(**{option: value})


def test_a_day_long_lease_is_accepted() -> None:
    assert WorkerConfig(lease=conf.LONGEST_LEASE).lease == 86400.0
