"""The notification protocol: what is built parses back, and garbage never raises."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from django_pq import notify
from tests.conftest import connect_like_django


@given(st.text())
def test_parsing_arbitrary_text_never_raises(payload):
    message = notify.parse(payload)
    assert message is None or isinstance(
        message, notify.TaskReady | notify.CancelRequested | notify.ScheduleChanged
    )


@given(st.from_type(object))
def test_parsing_anything_never_raises(value):
    notify.parse(value)


@given(
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(min_size=1, max_size=100).filter(lambda q: "\x00" not in q),
)
def test_a_task_ready_message_round_trips(run_at, queue):
    assert notify.parse(notify.task_ready(run_at, queue)) == notify.TaskReady(run_at, queue)


@given(st.integers(min_value=1, max_value=2**63 - 1))
def test_a_cancel_message_round_trips(task_id):
    assert notify.parse(notify.cancel_requested(task_id)) == notify.CancelRequested(task_id)


@pytest.mark.parametrize(
    "payload",
    [
        "t:x",  # the payload that crashed workers
        "t:abc:default",
        "t:NaN:default",
        "t:Infinity:default",
        "t:1:",
        "c:²",  # str.isdigit() says yes, int() says no
        "c:",
        "c:0",
        "c:-1",
        "c:99999999999999999999",
        "c:1 ",
        "s:x",
        "reconnected",
        "",
    ],
)
def test_garbage_is_no_message(payload):
    assert notify.parse(payload) is None


def test_what_postgres_builds_parses(db):
    """The SQL builders and the parser agree on what Postgres really prints."""
    with connect_like_django() as conn:
        [(ready, cancel)] = conn.execute(
            f"SELECT {notify.task_ready_sql('now()', '%s')}, {notify.cancel_requested_sql('42')}",
            ["my:queue"],
        ).fetchall()
    message = notify.parse(ready)
    assert isinstance(message, notify.TaskReady) and message.queue == "my:queue"
    assert math.isfinite(message.run_at)
    assert notify.parse(cancel) == notify.CancelRequested(42)
    assert notify.parse(notify.SCHEDULE_CHANGED_PAYLOAD) == notify.ScheduleChanged()


def test_no_module_but_the_protocol_formats_or_splits_a_payload():
    package = Path(notify.__file__).parent
    literal = re.compile(r"""['"][tcs]:""")
    offenders = [
        f"{path.relative_to(package)}:{number}"
        for path in package.rglob("*.py")
        if path.name != "notify.py" and "migrations" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if literal.search(line)
    ]
    assert offenders == []
