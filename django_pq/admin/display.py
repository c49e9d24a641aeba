"""How task values read in the admin: status badges, durations, sizes, readable JSON.

Everything that ends up in HTML goes through ``format_html`` or ``escape``: error text and
arguments come from task code and users, and must never become markup.
"""

from __future__ import annotations

import datetime as dt
import json
import pprint
from collections.abc import Callable
from typing import Any

from django.db import models
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from django_pq.codec import decode_payload, decode_value
from django_pq.exceptions import PayloadError
from django_pq.status import progress_fraction


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


def moment(value: dt.datetime) -> str:
    """A stored time as the admin shows it in its lists: ``2026-12-02 09:00:00 UTC``.

    One format for every time in a row, in the current time zone, so "next run" and
    "last run" read side by side.
    """
    return f"{timezone.localtime(value):%Y-%m-%d %H:%M:%S %Z}"


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


def readable_optional_json(data: Any) -> str:
    """Indented JSON, or "" for no value."""
    return "" if data is None else readable_json(data)


def readable_progress(progress: Any) -> str:
    """A task's progress as a person reads it, whatever JSON the row holds."""
    if progress is None:
        return ""
    if not isinstance(progress, dict):
        return readable_json(progress)
    line = progress_fraction(progress.get("done"), progress.get("total"))
    message = progress.get("message")
    return f"{line}: {message}" if isinstance(message, str) and message else line


def readable_decision(decision: Any) -> str:
    """How a failed run was judged ("exception at attempt 1 of 3: rule 'retry', next run
    at ..."), whatever JSON the row holds."""
    if decision is None:
        return ""
    if not isinstance(decision, dict):
        return readable_json(decision)
    summary = (
        f"{decision.get('error_code', '?')} at attempt {decision.get('attempt', '?')} of "
        f"{decision.get('max_attempts', '?')}: rule {decision.get('rule', '?')!r}, "
        + (f"retried, next run at {decision.get('next_run')}" if decision.get("retry") else "final")
    )
    return f"{summary}\n{readable_json(decision)}"


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


#: Characters of a JSON column shown raw when it is nested too deeply to decode.
RAW_JSON_LIMIT = 10_000


def stored_json(obj: models.Model, field: str, render: Callable[[Any], str]) -> str:
    """``render`` applied to the JSON column ``field`` of ``obj``, or its raw stored text.

    PostgreSQL stores JSON of any depth, but Python's parser (and every recursive reader
    after it) stops at about a thousand levels: a value nested that deep is shown as the
    text the database holds, cut to :data:`RAW_JSON_LIMIT` characters, instead of failing
    the page.
    """
    try:
        return render(getattr(obj, field))
    except RecursionError:
        pass
    raw = (
        type(obj)
        ._default_manager.filter(pk=obj.pk)
        .values_list(Cast(field, models.TextField()), flat=True)
        .first()
    )
    text = raw or ""
    cut = " (cut)" if len(text) > RAW_JSON_LIMIT else ""
    return f"(nested too deeply to decode; the stored JSON{cut}:)\n{text[:RAW_JSON_LIMIT]}"


def preformatted(text: str) -> SafeString:
    """``text`` in a ``<pre>``, escaped."""
    return format_html('<pre class="pq-pre">{}</pre>', text)
