"""What a child tells its parent about one task it ran: one JSON line on the report pipe.

The child builds a :class:`Report` and writes :meth:`Report.encode`; the parent reads
lines back with :meth:`Report.parse`. The pipe is the child's, but the task runs in the
child too and can write anything to it: parsing never raises, and a line that is not a
report is ``None``, which fails that one task (see ``RunningChild.take_report``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django_pq.models import ErrorCode


@dataclass(frozen=True)
class Report:
    """How one task ended, as the child saw it."""

    status: str  # "completed" | "failed"
    error: str = ""
    error_code: str = ""  # an ErrorCode; empty: "exception"
    result: str | None = None  # the return value as JSON text, when completed
    #: The task's own resource use, measured in the child (a reused child's exit status
    #: sums all its tasks). None: not measured; the parent takes what wait4 reports.
    cpu_seconds: float | None = None
    peak_rss: int | None = None
    #: The child exits after this report; False: it waits for another task.
    retiring: bool = True
    #: The raised exception's class and its bases (``module.QualName``), for retry policies.
    exception_types: list[str] | None = None
    retry_in: float | None = None  # pq.RetryLater's delay, in seconds
    count_attempt: bool = True  # pq.RetryLater(count_attempt=...)

    def as_json(self) -> dict[str, Any]:
        """The report as the JSON object the pipe carries."""
        return dataclasses.asdict(self)

    def encode(self) -> bytes:
        """One line for the report pipe."""
        return json.dumps(self.as_json()).encode() + b"\n"

    @classmethod
    def parse(cls, data: bytes | bytearray) -> Report | None:
        """The report in ``data`` (one JSON object), or None if it is not one. Never raises."""
        try:
            fields = json.loads(data)
        except (ValueError, RecursionError):  # not JSON (or not UTF-8), or nested too deep
            return None
        if not isinstance(fields, dict) or fields.get("status") not in ("completed", "failed"):
            return None
        values: dict[str, Any] = {}
        for name, fits in _FITS.items():
            if name in fields:
                if not fits(fields[name]):
                    return None
                values[name] = fields[name]
        for name in ("cpu_seconds", "retry_in"):
            if isinstance(values.get(name), int):
                values[name] = float(values[name])
        return cls(**values)


#: Failed only that task: the line the child wrote could not be read as a report.
UNREADABLE = Report(status="failed", error="Unreadable report.")


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: What each field of a report may hold on the wire.
_FITS: dict[str, Callable[[Any], bool]] = {
    "status": lambda value: isinstance(value, str),
    "error": lambda value: isinstance(value, str),
    # Only codes a row can hold: one it cannot would fail even the fallback write.
    "error_code": lambda value: value == "" or value in ErrorCode.values,
    # JSON text a row can hold: the child's is ASCII; a lone surrogate has no UTF-8 at
    # all, and the driver would raise sending it (the error text is escaped instead).
    "result": lambda value: value is None or (isinstance(value, str) and _encodable(value)),
    "cpu_seconds": lambda value: value is None or _is_number(value),
    "peak_rss": lambda value: value is None or _is_integer(value),
    "retiring": lambda value: isinstance(value, bool),
    "exception_types": lambda value: (
        value is None
        or (
            isinstance(value, list)
            and len(value) <= 1000
            and all(
                isinstance(name, str) and _encodable(name) and "\x00" not in name for name in value
            )
        )
    ),
    "retry_in": lambda value: (
        value is None or (_is_number(value) and math.isfinite(value) and 0 <= value <= 315360000)
    ),
    "count_attempt": lambda value: isinstance(value, bool),
}
