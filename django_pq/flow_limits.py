"""Flow limits: what ``PQ_LIMITS`` (and the admin's limit rows) say about a flow key.

A task may carry a ``limit_key`` (``"stripe"``, ``"customer:42"``). A limit names a key or
a glob pattern (``"customer:*"``, each matching key limited on its own) and any of:

- ``concurrency``: at most that many tasks of the key running at once, across workers;
- ``rate``: ``"100/m"`` (``/s``, ``/m``, ``/h``), starts per period from a token bucket
  that holds ``burst`` tokens (default 1: starts spread evenly, a burst cannot spend a
  minute's budget in one second unless ``burst`` says so);
- ``ordered``: one at a time, in enqueue order; a task that fails for good holds the rest
  (``on_failure="hold"``, the default) until it is retried or the key released, or lets
  them go on (``"release"``).

The most specific limit wins: the exact key, then the longest pattern. A key no limit
names runs unlimited. This module only parses and validates; the claim enforces.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

LIMIT_OPTIONS = ("concurrency", "rate", "burst", "ordered", "on_failure")
ON_FAILURE = ("hold", "release")
#: The longest ``limit_key``/``fair_key`` (and limit pattern) a row holds.
KEY_LENGTH = 200

_RATE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*/\s*(s|m|h)\s*", re.ASCII)
_PERIOD = {"s": 1.0, "m": 60.0, "h": 3600.0}


class InvalidLimit(ValueError):
    """A limit that cannot be enforced; the message names the key and the fix."""


@dataclass(frozen=True)
class FlowLimit:
    """One limit, validated: the row ``pq_limits`` holds for ``pattern``."""

    pattern: str
    concurrency: int | None = None
    rate: str | None = None
    per_second: float | None = None
    burst: float = 1.0
    ordered: bool = False
    on_failure: str = "hold"


def matches(pattern: str, key: str) -> bool:
    """Whether the glob ``pattern`` (``*``: any run of characters) matches ``key``, as the
    claim's ``LIKE`` does."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, key, re.DOTALL) is not None


def parse_rate(rate: Any, where: str) -> float:
    """Starts per second of ``"N/s"``, ``"N/m"`` or ``"N/h"``."""
    match = _RATE.fullmatch(rate) if isinstance(rate, str) else None
    per_second = float(match[1]) / _PERIOD[match[2]] if match else 0.0
    if not match or not math.isfinite(per_second) or per_second <= 0:
        raise InvalidLimit(
            f"{where}: rate {rate!r} cannot be read; give a positive count per second, "
            "minute or hour, like '20/s', '100/m' or '1000/h'."
        )
    return per_second


def _positive(value: Any, option: str, where: str, *, integer: bool) -> Any:
    kinds = int if integer else int | float
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or not math.isfinite(value)
        or value <= 0
    ):
        kind = "a positive whole number" if integer else "a positive number"
        raise InvalidLimit(f"{where}: {option} must be {kind}; got {value!r}.")
    return value


def check_key(option: str, key: Any) -> str | None:
    """A ``limit_key``/``fair_key``/pattern as a row may hold it, or :class:`InvalidLimit`."""
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > KEY_LENGTH or "\x00" in key:
        raise InvalidLimit(
            f"{option} must be a non-empty string of at most {KEY_LENGTH} characters "
            f"without NUL (e.g. 'stripe' or 'customer:42'), or None; got {key!r}."
        )
    return key


def parse_limit(pattern: Any, options: Any) -> FlowLimit:
    """One ``PQ_LIMITS`` entry, validated; :class:`InvalidLimit` names what is wrong."""
    check_key("A PQ_LIMITS key", pattern)
    where = f"PQ_LIMITS[{pattern!r}]"
    if not isinstance(options, dict):
        raise InvalidLimit(
            f"{where} must be a dict of {', '.join(LIMIT_OPTIONS)}; got {options!r}."
        )
    unknown = sorted(set(options) - set(LIMIT_OPTIONS))
    if unknown:
        raise InvalidLimit(
            f"{where} has unknown option(s) {', '.join(map(repr, unknown))}; a limit takes "
            f"{', '.join(LIMIT_OPTIONS)}."
        )
    concurrency = options.get("concurrency")
    if concurrency is not None:
        _positive(concurrency, "concurrency", where, integer=True)
    rate = options.get("rate")
    per_second = None if rate is None else parse_rate(rate, where)
    burst = options.get("burst", 1)
    _positive(burst, "burst", where, integer=False)
    if "burst" in options and rate is None:
        raise InvalidLimit(f"{where}: burst applies to a rate; give rate= too, or drop burst.")
    ordered = options.get("ordered", False)
    if not isinstance(ordered, bool):
        raise InvalidLimit(f"{where}: ordered must be True or False; got {ordered!r}.")
    if ordered and concurrency is not None and concurrency != 1:
        raise InvalidLimit(
            f"{where}: ordered=True runs one task of the key at a time; drop concurrency="
            f"{concurrency!r} (or set it to 1), or drop ordered."
        )
    on_failure = options.get("on_failure", "hold")
    if on_failure not in ON_FAILURE:
        raise InvalidLimit(f"{where}: on_failure must be 'hold' or 'release'; got {on_failure!r}.")
    if "on_failure" in options and not ordered:
        raise InvalidLimit(f"{where}: on_failure applies to ordered=True keys; drop it.")
    if concurrency is None and rate is None and not ordered:
        raise InvalidLimit(
            f"{where} limits nothing; give concurrency=, rate= or ordered=True (a key "
            "no limit names already runs unlimited)."
        )
    return FlowLimit(
        pattern=pattern,
        concurrency=1 if ordered else concurrency,
        rate=None if rate is None else rate.strip(),
        per_second=per_second,
        burst=float(burst),
        ordered=ordered,
        on_failure=on_failure,
    )


def parse_limits(setting: Any) -> list[FlowLimit]:
    """Every limit of ``PQ_LIMITS`` (a dict of pattern to options), validated."""
    if setting is None:
        return []
    if not isinstance(setting, dict):
        raise InvalidLimit(
            "PQ_LIMITS must be a dict of key or pattern to limit, like "
            "{'stripe': {'concurrency': 5, 'rate': '100/m'}}; got "
            f"{type(setting).__name__}."
        )
    return [parse_limit(pattern, options) for pattern, options in setting.items()]
