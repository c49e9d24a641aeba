"""How task values read in the admin: status badges, durations, sizes, readable JSON.

Everything that ends up in HTML goes through ``format_html`` or ``escape``: error text and
arguments come from task code and users, and must never become markup.
"""

from __future__ import annotations

import datetime as dt
import json
import pprint
from typing import Any

from django.utils.html import format_html
from django.utils.safestring import SafeString

from django_pq.codec import decode_payload, decode_value
from django_pq.exceptions import PayloadError


def status_badge(status: str, label: str) -> SafeString:
    """A coloured badge for a task status (the colours live in ``django_pq/admin.css``)."""
    return format_html('<span class="pq-badge pq-status-{}">{}</span>', status, label)


def human_duration(seconds: float | None) -> str:
    """``"850 ms"``, ``"12.3 s"``, ``"4 min 05 s"``, ``"2 h 03 min"``; ``"-"`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def between(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    """Seconds from ``start`` to ``end``, or None when either is unknown."""
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def human_bytes(size: int | None) -> str:
    """``"12.5 MiB"`` for a byte count; ``"-"`` when unknown."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def readable_json(data: Any) -> str:
    """Stored JSON as indented text, exactly as it is stored (tags included)."""
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True)


def readable_call(payload: Any) -> str:
    """A payload as Python would show the call's arguments, or its raw JSON if undecodable.

    Decoding turns the codec's tagged values back into datetimes, Decimals and so on, so
    staff see ``datetime.date(2026, 1, 31)`` rather than ``{"__pq__": "date", ...}``.
    """
    try:
        args, kwargs = decode_payload(payload)
    except PayloadError as error:
        return f"(cannot decode: {error})\n{readable_json(payload)}"
    lines = [f"args: {pprint.pformat(args, width=88)}", f"kwargs: {pprint.pformat(kwargs)}"]
    return "\n".join(lines)


def readable_value(data: Any) -> str:
    """A stored result (or any encoded value) as Python shows it, or its raw JSON."""
    if data is None:
        return "-"
    try:
        return pprint.pformat(decode_value(data), width=88)
    except PayloadError as error:
        return f"(cannot decode: {error})\n{readable_json(data)}"


def preformatted(text: str) -> SafeString:
    """``text`` in a ``<pre>``, escaped."""
    return format_html('<pre class="pq-pre">{}</pre>', text)
