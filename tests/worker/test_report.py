"""The child's report to its parent, and the verdict the parent draws from it.

A task runs in the child and can write anything to the report pipe: whatever arrives must
fail that one task and never raise in the parent.
"""

from __future__ import annotations

import dataclasses
import json
import signal
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from django_pq.store.worker import Claimed
from django_pq.worker import report as report_module
from django_pq.worker.child import execute, run_task
from django_pq.worker.children import RunningChild, judge, verdict
from django_pq.worker.report import UNREADABLE, Report

TASK = Claimed(
    id=7,
    name="tests.testapp.tasks:add",
    payload=json.dumps({"args": [2, 3], "kwargs": {}}),
    queue="default",
    priority=50,
    attempts=1,
    max_attempts=3,
    max_runtime=None,
    run_token="00000000-0000-0000-0000-000000000007",
    client_id=None,
    periodic_id=None,
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
)


def judged(report, **how):
    """The outcome of TASK with ``report``; ``how`` overrides exit status, usage, stop."""
    how = {"exit_status": 0, "usage": None, **how}
    return verdict(
        TASK,
        report,
        how.pop("exit_status"),
        how.pop("usage"),
        error_max_length=1000,
        retry_delay=1.5,
        **how,
    )


# -- the wire ------------------------------------------------------------------------


def test_every_field_of_a_report_crosses_the_pipe():
    sent = Report(
        status="failed",
        error="boom",
        error_code="memory",
        result=None,
        cpu_seconds=0.5,
        peak_rss=4096,
        retiring=False,
    )
    line = sent.encode()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert Report.parse(line) == sent
    assert set(report_module._FITS) == {field.name for field in dataclasses.fields(Report)}


def test_what_the_child_reports_for_a_task_parses_back():
    report = run_task(TASK)
    assert report == Report(status="completed", result="5")
    assert Report.parse(report.encode()) == report


def test_execute_gives_the_report_as_a_json_object():
    # django_pq.testing serialises it itself and judges it as the worker does.
    assert Report.parse(json.dumps(execute(TASK)).encode()) == run_task(TASK)


def test_a_whole_number_of_cpu_seconds_is_a_float():
    parsed = Report.parse(b'{"status": "completed", "cpu_seconds": 2}')
    assert parsed is not None and parsed.cpu_seconds == 2.0
    assert isinstance(parsed.cpu_seconds, float)


@given(st.binary())
def test_parsing_any_bytes_never_raises(data):
    parsed = Report.parse(data)
    assert parsed is None or isinstance(parsed, Report)


@given(JSON)
def test_parsing_any_json_never_raises(value):
    parsed = Report.parse(json.dumps(value).encode())
    assert parsed is None or parsed.status in ("completed", "failed")


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"not json",
        b"\xff\xfe",  # not UTF-8
        b"[" * 100_000,  # nested past the recursion limit
        b"[]",
        b"{}",
        b'"completed"',
        b'{"error": "no status"}',
        b'{"status": "running"}',
        b'{"status": 1}',
        b'{"status": "completed", "result": {"a": 1}}',
        # A lone surrogate: no UTF-8 to send, so no row could hold it (the child's own
        # result is ASCII JSON text, where a surrogate stays an escape).
        b'{"status": "completed", "result": "\\ud800"}',
        b'{"status": "failed", "error": 5}',
        b'{"status": "failed", "error_code": ["exception"]}',
        b'{"status": "failed", "error_code": "bogus"}',  # no row can hold it
        b'{"status": "completed", "cpu_seconds": "fast"}',
        b'{"status": "completed", "cpu_seconds": true}',
        b'{"status": "completed", "peak_rss": 1.5}',
        b'{"status": "completed", "retiring": "yes"}',
    ],
)
def test_a_line_that_is_not_a_report_is_none(line):
    assert Report.parse(line) is None


def test_a_line_that_is_not_a_report_fails_only_its_task_as_an_exception():
    child = RunningChild(task=TASK, pid=0, report_fd=-1, started=0.0, deadline=None)
    child.report += b"garbage\n" + Report(status="completed", result="5").encode()
    first, second = child.take_report(), child.take_report()
    assert first == UNREADABLE
    assert second == Report(status="completed", result="5")
    assert child.take_report() is None  # nothing more: no line, no report
    outcome = judged(first)
    assert (outcome.status, outcome.error_code, outcome.error) == (
        "failed",
        "exception",
        "Unreadable report.",
    )


# -- the verdict ---------------------------------------------------------------------


def test_a_completed_report_completes_the_task_with_its_result():
    outcome = judged(Report(status="completed", result="5", cpu_seconds=0.25, peak_rss=1024))
    assert (outcome.task_id, outcome.run_token) == (TASK.id, TASK.run_token)
    assert (outcome.status, outcome.result, outcome.error_code) == ("completed", "5", "")
    assert (outcome.cpu_seconds, outcome.peak_rss, outcome.retry_delay) == (0.25, 1024, 1.5)


def test_a_failed_report_without_a_code_is_an_exception():
    outcome = judged(Report(status="failed", error="Traceback ..."))
    assert (outcome.status, outcome.error_code, outcome.error) == (
        "failed",
        "exception",
        "Traceback ...",
    )


def test_the_error_text_is_bounded_and_free_of_nul():
    outcome = judged(Report(status="failed", error="\x00" + "x" * 5000))
    assert "\x00" not in outcome.error and len(outcome.error) < 1100


def test_error_text_utf8_cannot_encode_is_escaped():
    # A task may raise with a lone surrogate in its message; the driver cannot send it.
    parsed = Report.parse(b'{"status": "failed", "error": "bad \\udcff"}')
    assert parsed is not None and parsed.error == "bad \udcff"
    outcome = judged(parsed)
    assert outcome.error == "bad \\udcff"
    outcome.error.encode()  # what the finish statement sends


def test_the_childs_own_measure_wins_over_wait4s():
    usage = SimpleNamespace(ru_maxrss=10, ru_utime=1.0, ru_stime=2.0)
    mine = judged(Report(status="completed", cpu_seconds=0.5, peak_rss=64), usage=usage)
    assert (mine.cpu_seconds, mine.peak_rss) == (0.5, 64)
    unmeasured = judged(Report(status="completed"), usage=usage)
    assert (unmeasured.cpu_seconds, unmeasured.peak_rss) == (3.0, 10 * 1024)
    assert judged(None, usage=None).cpu_seconds is None


def test_a_stopped_task_fails_with_the_reason_it_was_stopped():
    stop = {"stop_reason": "timeout", "stop_message": "Ran past 1s."}
    silent = judged(None, exit_status=signal.SIGTERM, **stop)
    assert (silent.status, silent.error_code, silent.error) == ("failed", "timeout", "Ran past 1s.")
    reported = judged(Report(status="failed", error="KeyboardInterrupt"), **stop)
    assert (reported.error_code, reported.error) == ("timeout", "Ran past 1s.\nKeyboardInterrupt")


def test_a_cancelled_task_is_cancelled_unless_it_completed_first():
    stop = {"stop_reason": "cancelled", "stop_message": "Cancelled while running."}
    assert judged(None, **stop).status == "cancelled"
    assert judged(Report(status="failed"), **stop).status == "cancelled"
    assert judged(Report(status="completed", result="5"), **stop).status == "completed"


def test_a_process_that_ended_without_reporting_is_judged_by_its_exit():
    killed = judged(None, exit_status=signal.SIGKILL)  # a wait status: killed by the signal
    assert (killed.error_code, "SIGKILL" in killed.error) == ("signal", True)
    exited = judged(None, exit_status=3 << 8)  # exited with status 3
    assert exited.error_code == "exception" and "status 3" in exited.error


def test_judge_reads_what_a_child_left_in_its_pipe():
    child = RunningChild(task=TASK, pid=0, report_fd=-1, started=0.0, deadline=None)
    child.report += Report(status="completed", result="5").encode()
    assert judge(child, 0, None, 1000, retry_delay=0.0).status == "completed"
    child.report = bytearray(b"garbage")  # not a report: the exit status decides
    assert judge(child, 0, None, 1000, retry_delay=0.0).error_code == "exception"
