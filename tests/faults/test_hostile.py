"""Hostile rows and hostile outcomes: nothing runs that should not, the worker carries on."""

from __future__ import annotations

import base64
import json
import os
import pickle
import tempfile
from pathlib import Path

import psycopg
from django.core import signing

from tests.faults.conftest import FIGURES, check_invariants
from tests.worker.conftest import pid_alive, wait_until

MARKERS = Path(tempfile.gettempdir())


class _Exploit:
    """Unpickling this runs a shell command: it must never be unpickled by a worker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _pickled(marker: Path, signature: str | None) -> dict[str, object]:
    data = base64.urlsafe_b64encode(pickle.dumps(_Exploit(marker))).decode()
    signed = (
        signing.Signer(salt="django_pq.codec.pickle").sign(data)
        if signature is None
        else f"{data}:{signature}"
    )
    return {"args": [{"__pq__": "pickle", "v": signed}], "kwargs": {}}


def _nested(depth: int) -> str:
    return '{"args": [' + "[" * depth + "]" * depth + '], "kwargs": {}}'


def hostile_rows(marker: Path) -> list[tuple[str, str, str, str]]:
    """(label, name, payload JSON, queue): each must fail without running or importing."""
    ok = '{"args": [], "kwargs": {}}'
    shell = json.dumps({"args": [f"touch {marker}"], "kwargs": {}})
    add = "tests.testapp.tasks:add"
    return [
        ("os:system", "os:system", shell, "default"),
        ("builtins:eval", "builtins:eval", json.dumps({"args": ["1"], "kwargs": {}}), "default"),
        ("module outside the allowed ones", "tests.sideeffect:run", ok, "default"),
        ("private attribute", "tests.testapp.tasks:add.__globals__", ok, "default"),
        ("no colon", "tests.testapp.tasks.add", ok, "default"),
        ("empty name", "", ok, "default"),
        ("missing function", "tests.testapp.tasks:nope", ok, "default"),
        ("payload is a list", add, "[]", "default"),
        ("payload is null", add, "null", "default"),
        ("args is a number", add, '{"args": 1, "kwargs": {}}', "default"),
        ("extra key", add, '{"args": [], "kwargs": {}, "x": 1}', "default"),
        ("unknown tag", add, '{"args": [{"__pq__": "nope", "v": 1}], "kwargs": {}}', "default"),
        ("bad literal", add, '{"args": [{"__pq__": "int", "v": "zz"}], "kwargs": {}}', "default"),
        ("50 MB payload", add, json.dumps({"args": ["x" * 50_000_000], "kwargs": {}, "y": 1}),
         "default"),
        # Postgres itself refuses this one ("stack depth limit exceeded").
        ("nested 100,000 deep", add, _nested(100_000), "default"),
        ("pickle while PQ_PICKLE is off", add, json.dumps(_pickled(marker, None)), "default"),
        ("pickle with a wrong signature", add, json.dumps(_pickled(marker, "forged")),
         "pickle-on"),
    ]  # fmt: skip


def insert_raw(target, name: str, payload: str, queue: str) -> int | str:
    """Insert a row as another program might; Postgres's own refusal is returned as text."""
    try:
        [(task_id,)] = target.query(
            """INSERT INTO pq_tasks (queue, name, payload, priority, run_at, max_attempts,
                   status, attempts, error, error_code, is_cancel_requested)
               VALUES (%s, %s, %s::jsonb, 60, now(), 1, 'pending', 0, '', '', false)
               RETURNING id""",
            [queue, name, payload],
        )
    except psycopg.Error as error:
        return str(error).splitlines()[0]
    return int(task_id)


def test_hostile_rows_run_nothing_import_nothing_and_the_worker_continues(test_db, fleet):
    marker = MARKERS / f"pq-hostile-{os.getpid()}"
    side_effect = MARKERS / f"pq-side-effect-{os.getpid()}"
    for path in (marker, side_effect):
        path.unlink(missing_ok=True)
    inserted, refused = {}, {}
    for label, name, payload, queue in hostile_rows(marker):
        outcome = insert_raw(test_db, name, payload, queue)
        (refused if isinstance(outcome, str) else inserted)[label] = outcome
    FIGURES["hostile rows tried"] += len(inserted) + len(refused)
    FIGURES["hostile rows refused by Postgres"] += len(refused)
    # An ordinary task, claimed after the hostile ones (lower priority): proof of life.
    [(normal,)] = test_db.query(
        """INSERT INTO pq_tasks (queue, name, payload, priority, run_at, max_attempts, status,
               attempts, error, error_code, is_cancel_requested)
           VALUES ('default', 'tests.testapp.tasks:add', '{"args": [2, 3], "kwargs": {}}',
                   10, now(), 1, 'pending', 0, '', '', false) RETURNING id"""
    )
    env = {"PQ_SIDE_EFFECT_MARKER": str(side_effect)}
    # A lease of ordinary length: claiming and forking beside a 50 MB payload can hold the
    # parent for seconds on a loaded machine, and a lapsed lease is not what this tests.
    lease = {"PQ_LEASE": 30.0, "PQ_HEARTBEAT_INTERVAL": 2.0}
    plain = fleet.start(test_db, "--burst", "--queue", "default", settings=lease, env=env)
    pickling = fleet.start(
        test_db,
        "--burst",
        "--queue",
        "pickle-on",
        settings={"PQ_PICKLE": True, **lease},
        env=env,
    )
    assert plain.wait(180) == 0, plain.tail()
    assert pickling.wait(180) == 0, pickling.tail()

    outcomes = {
        label: test_db.query("SELECT status, error_code FROM pq_tasks WHERE id = %s", [task_id])[0]
        for label, task_id in inserted.items()
    }
    wrong = {
        label: outcome
        for label, outcome in outcomes.items()
        if outcome not in {("failed", "unknown_task"), ("failed", "bad_payload")}
    }
    assert wrong == {}, f"hostile rows that did not fail as unknown_task/bad_payload: {wrong}"
    assert not marker.exists(), "a hostile row ran a shell command"
    assert not side_effect.exists(), "a module outside the allowed ones was imported"
    assert test_db.query("SELECT status, result FROM pq_tasks WHERE id = %s", [normal]) == [
        ("completed", 5)
    ]
    check_invariants(test_db)
    # Whatever Postgres refused never became a row; nothing else may be refused.
    assert set(refused) <= {"nested 100,000 deep"}, refused


def test_hostile_outcomes_are_recorded_bounded_and_the_worker_continues(test_db, fleet):
    import django_pq as pq
    from tests.testapp import tasks

    nul = pq.enqueue(tasks.error_with_nul_bytes)
    big_error = pq.enqueue(tasks.ten_megabytes_of_error)
    loud = pq.enqueue(tasks.print_to_stdout, 100)
    after = pq.enqueue(tasks.add, 1, 1, priority=0)
    worker = fleet.start(test_db, "--burst", "--concurrency", "1")
    assert worker.wait(300) == 0, worker.tail()
    FIGURES["hostile outcomes tried"] += 3

    rows = dict(
        (task_id, (status, code, error))
        for task_id, status, code, error in test_db.query(
            "SELECT id, status, error_code, error FROM pq_tasks"
        )
    )
    status, code, error = rows[nul.pk]
    assert (status, code) == ("failed", "exception") and "before\\x00after" in error
    status, code, error = rows[big_error.pk]
    assert (status, code) == ("failed", "exception")
    assert 60_000 < len(error) <= 70_000 and "characters cut" in error
    assert rows[loud.pk][:2] == ("completed", "")
    assert rows[after.pk][:2] == ("completed", "")
    assert worker.log_path.stat().st_size >= 100 * 1024 * 1024
    check_invariants(test_db)


def _grandchild_of(path: Path) -> int:
    return int(wait_until(lambda: path.exists() and path.read_text(), 60, "the grandchild"))


def test_a_grandchild_of_a_task_that_times_out_dies_with_the_process_group(test_db, fleet):
    import django_pq as pq
    from tests.testapp import tasks

    marker = MARKERS / f"pq-grandchild-timeout-{os.getpid()}"
    marker.unlink(missing_ok=True)
    task = pq.enqueue(tasks.leave_grandchild, str(marker), 60, max_runtime=1)
    fleet.start(test_db, "--concurrency", "1")
    grandchild = _grandchild_of(marker)
    wait_until(lambda: not pid_alive(grandchild), 30, "the grandchild to be killed")
    wait_until(
        lambda: (
            test_db.query("SELECT status, error_code FROM pq_tasks WHERE id = %s", [task.pk])
            == [("failed", "timeout")]
        ),
        30,
        "the timeout to be recorded",
    )


def test_a_grandchild_left_behind_by_a_finished_task_is_killed(test_db, fleet):
    import django_pq as pq
    from tests.testapp import tasks

    marker = MARKERS / f"pq-grandchild-{os.getpid()}"
    marker.unlink(missing_ok=True)
    task = pq.enqueue(tasks.leave_grandchild, str(marker))
    fleet.start(test_db, "--concurrency", "1")
    grandchild = _grandchild_of(marker)
    wait_until(lambda: task.__class__.objects.get(pk=task.pk).status == "completed", 30)
    try:
        wait_until(lambda: not pid_alive(grandchild), 5, "the grandchild to be killed")
    finally:
        if pid_alive(grandchild):
            os.kill(grandchild, 9)


def test_a_row_cannot_reach_os_system_through_an_allowed_modules_imports(test_db, fleet):
    marker = MARKERS / f"pq-through-import-{os.getpid()}"
    marker.unlink(missing_ok=True)
    shell = json.dumps({"args": [f"touch {marker}"], "kwargs": {}})
    task_id = insert_raw(test_db, "tests.testapp.tasks:os.system", shell, "default")
    FIGURES["hostile rows tried"] += 1
    worker = fleet.start(test_db, "--burst")
    assert worker.wait(120) == 0, worker.tail()
    ran_shell = marker.exists()
    marker.unlink(missing_ok=True)
    assert not ran_shell, "a row ran a shell command through tests.testapp.tasks:os.system"
    assert test_db.query("SELECT status, error_code FROM pq_tasks WHERE id = %s", [task_id]) == [
        ("failed", "unknown_task")
    ]


def test_a_payload_nested_deeper_than_python_recursion_fails_as_bad_payload(test_db, fleet):
    task_id = insert_raw(test_db, "tests.testapp.tasks:add", _nested(5_000), "default")
    FIGURES["hostile rows tried"] += 1
    assert isinstance(task_id, int), task_id
    worker = fleet.start(test_db, "--burst")
    code = worker.wait(120)
    assert test_db.query("SELECT status, error_code FROM pq_tasks WHERE id = %s", [task_id]) == [
        ("failed", "bad_payload")
    ]
    assert code == 0, worker.tail()


def test_a_task_whose_module_raises_on_import_fails_alone_as_unknown_task(test_db, fleet):
    # Found by test_total_inputs.py: the child let the import's RuntimeError escape and
    # exited 70 without a report, so the row ended "exception" with no word of the import.
    task_id = insert_raw(test_db, "tests.faults.poison.raises_on_import:run", "{}", "default")
    FIGURES["hostile rows tried"] += 1
    after = insert_raw(
        test_db, "tests.testapp.tasks:add", '{"args": [1, 2], "kwargs": {}}', "default"
    )
    allowed = {"PQ_ALLOWED_MODULES": ["tests.testapp", "tests.faults.poison"]}
    worker = fleet.start(test_db, "--burst", settings=allowed)
    assert worker.wait(120) == 0, worker.tail()
    [(status, code, error)] = test_db.query(
        "SELECT status, error_code, error FROM pq_tasks WHERE id = %s", [task_id]
    )
    assert (status, code) == ("failed", "unknown_task"), error
    assert "refuses to be imported" in error
    assert test_db.query("SELECT status FROM pq_tasks WHERE id = %s", [after]) == [("completed",)]
