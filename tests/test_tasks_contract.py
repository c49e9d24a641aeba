"""The django.tasks contract, as PQBackend holds it with a real ``pq_worker``.

Each test states a behaviour that code written against Django's tasks framework relies on,
the way Django's own backends (ImmediateBackend, django-tasks-db's DatabaseBackend) behave
it. The module runs unchanged on Django 6.x and on Django 5.2 with the django-tasks backport.

Django's ``task_started`` and ``task_finished`` are sent in the worker's child; the
receivers below write what they heard to ``RunLog``, so a test can compare it with what
``get_result`` reads afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections, models
from django.test.utils import override_settings
from django.utils import timezone

import django_pq as pq
from django_pq.backend import PQBackend, PQTask
from django_pq.exceptions import TaskRefused
from django_pq.models import Status
from django_pq.models import Task as TaskRow
from django_pq.testing import run_pending_tasks
from tests import tasks_framework as framework
from tests.tasks_framework import InvalidTask, TaskContext, TaskResultStatus, task
from tests.testapp import tasks as native
from tests.testapp.models import RunLog
from tests.worker import conftest as worker_fixtures
from tests.worker.conftest import WorkerProcess, run_burst, wait_until

start_worker = worker_fixtures.start_worker

WORKER_SETTINGS = framework.pq_settings_for("tests.test_tasks_contract")


class Overheated(Exception):
    """A task's own exception class, to be named by its path in the result's errors."""


class Size(models.TextChoices):
    SMALL = "s", "Small"
    LARGE = "l", "Large"


class Level(models.IntegerChoices):
    LOW = 1, "Low"


@task
def describe_choices(size: str, levels: dict[str, int]) -> dict[str, Any]:
    """What arrived (type names and values), and a choice returned as the value."""
    seen = [
        type(size).__name__,
        size,
        {type(k).__name__: type(v).__name__ for k, v in levels.items()},
    ]
    return {"seen": seen, "back": Size.LARGE, "level": Level.LOW}


@task
def multiply(a: int, b: int) -> int:
    return a * b


@task
async def async_echo(value: Any) -> Any:
    await asyncio.sleep(0)
    return value


@task
def overheat(degrees: int) -> None:
    raise Overheated(f"{degrees} degrees is too hot")


@task
def overheat_verbosely(degrees: int) -> None:
    """Its message and note have lines that read like other exceptions' lines."""
    error = Overheated(f"{degrees} degrees\nKeyError: not this one\n  indented: nor this")
    error.add_note("Hint: let it cool down")
    raise error


@task
def overheat_in_groups() -> None:
    raise ExceptionGroup("two sensors\nValueError: not this one", [Overheated("a"), KeyError("b")])


@task
def exits() -> None:
    raise SystemExit(3)


@task
def returns_an_object() -> object:
    return object()


@task
def returns_a_tuple() -> tuple[int, tuple[int, int]]:
    return (1, (2, 3))


@task(takes_context=True)
def report_context(context: TaskContext, label: str) -> dict[str, Any]:
    return {"id": context.task_result.id, "attempt": context.attempt, "label": label}


@task
def record(label: str) -> None:
    RunLog.objects.create(event="contract_ran", pid=os.getpid(), value=label)


@task
def wait_for_release(key: str) -> str:
    """Runs until the test writes a ``release`` line for ``key`` (at most a minute)."""
    deadline = time.monotonic() + 60
    while not RunLog.objects.filter(event="release", value=key).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"never released: {key}")
        time.sleep(0.05)
    return key


def _heard(task_result: Any) -> str:
    errors = [error.exception_class_path for error in task_result.errors]
    value = task_result._return_value if task_result.status == "SUCCESSFUL" else None
    # repr() for what JSON cannot hold, so a receiver never fails and hides what it heard.
    heard = {"status": task_result.status, "errors": errors, "value": value}
    return json.dumps(heard, default=repr)


def _recorder(event: str) -> Callable[..., None]:
    def record_heard(sender: Any, task_result: Any, **kwargs: Any) -> None:
        RunLog.objects.create(
            task_id=int(task_result.id), event=event, pid=os.getpid(), value=_heard(task_result)
        )

    return record_heard


framework.task_started.connect(
    _recorder("contract_started"), weak=False, dispatch_uid="contract_started"
)
framework.task_finished.connect(
    _recorder("contract_finished"), weak=False, dispatch_uid="contract_finished"
)


def heard(result_id: str, event: str) -> list[dict[str, Any]]:
    """What the receivers in the worker's child heard for one task, in order."""
    lines = RunLog.objects.filter(task_id=int(result_id), event=event).order_by("id")
    return [json.loads(line.value) for line in lines]


@pytest.fixture(autouse=True)
def pq_backend(settings: Any) -> None:
    settings.TASKS = WORKER_SETTINGS["TASKS"]
    settings.PQ_ALLOWED_MODULES = WORKER_SETTINGS["PQ_ALLOWED_MODULES"]


def burst(start_worker: Callable[..., WorkerProcess], *args: str) -> WorkerProcess:
    return run_burst(start_worker, *args, settings=WORKER_SETTINGS)


def in_event_loop(work: Callable[[], Any]) -> Any:
    """Run an async call to the end; close the connection asgiref's thread opened."""

    async def run() -> Any:
        try:
            return await work()
        finally:
            await sync_to_async(connections.close_all)()

    return asyncio.run(run())


# -- what the backend says it supports -------------------------------------------------


def test_backend_declares_what_it_supports() -> None:
    backend = framework.task_backends["default"]
    assert isinstance(backend, PQBackend)
    assert (backend.supports_defer, backend.supports_async_task) == (True, True)
    assert (backend.supports_get_result, backend.supports_priority) == (True, True)
    assert backend.task_class is PQTask  # what @task builds under PQBackend


def test_validate_task_refuses_what_django_refuses() -> None:
    backend = framework.task_backends["default"]
    backend.validate_task(async_echo)  # async tasks are supported
    backend.validate_task(multiply.using(run_after=timezone.now()))  # so is deferring
    with pytest.raises(InvalidTask, match="priority"):
        multiply.using(priority=101)
    with pytest.raises(InvalidTask, match="aware"):
        multiply.using(run_after=datetime(2030, 1, 1))  # naive on purpose
    with pytest.raises(InvalidTask, match="context"):
        task(takes_context=True)(multiply.func)


@pytest.mark.django_db
def test_queue_names_are_checked_against_queues() -> None:
    unchecked = multiply.using(queue_name="reports")  # built while QUEUES allows any name
    with override_settings(
        TASKS={"default": {"BACKEND": "django_pq.backend.PQBackend", "QUEUES": ["mail"]}}
    ):
        with pytest.raises(InvalidTask, match="'reports' is not valid"):
            multiply.using(queue_name="reports")
        with pytest.raises(InvalidTask, match="'reports' is not valid"):
            unchecked.enqueue(1, 2)
        mailed = multiply.using(queue_name="mail").enqueue(1, 2)
    assert list(TaskRow.objects.values_list("queue", flat=True)) == ["mail"]
    assert mailed.task.queue_name == "mail"


# -- enqueueing --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_enqueue_returns_a_ready_result_and_sends_task_enqueued() -> None:
    heard_enqueued: list[tuple[Any, Any]] = []

    def listen(sender: Any, task_result: Any, **kwargs: Any) -> None:
        heard_enqueued.append((sender, task_result))

    framework.task_enqueued.connect(listen)
    try:
        result = multiply.enqueue(6, b=7)
        async_result = in_event_loop(lambda: async_echo.aenqueue((1, 2)))
    finally:
        framework.task_enqueued.disconnect(listen)
    assert heard_enqueued == [(PQBackend, result), (PQBackend, async_result)]
    assert result.status == TaskResultStatus.READY
    assert (result.task, result.args, result.kwargs) == (multiply, [6], {"b": 7})
    assert (result.started_at, result.finished_at, result.last_attempted_at) == (None,) * 3
    assert result.attempts == 0 and not result.is_finished
    with pytest.raises(ValueError, match="not finished"):
        result.return_value  # noqa: B018
    assert async_result.args == [[1, 2]]  # stored as JSON, as Django's backends store it


@pytest.mark.django_db(transaction=True)
def test_unserializable_arguments_raise_type_error_naming_the_argument() -> None:
    when = timezone.now()
    for call, where in [
        (lambda: multiply.enqueue(1, when), "positional argument 2"),
        (lambda: multiply.enqueue(1, b={"at": when}), "argument 'b'"),
        (lambda: in_event_loop(lambda: multiply.aenqueue(a=object(), b=1)), "argument 'a'"),
    ]:
        with pytest.raises(TypeError, match="Unsupported type") as caught:
            call()
        assert isinstance(caught.value, TaskRefused)  # django-pq's own error as well
        assert str(caught.value).startswith(f"{where} of tests.test_tasks_contract.multiply")
    assert not TaskRow.objects.exists()


@pytest.mark.django_db
def test_pq_enqueue_raises_the_same_type_error_naming_the_argument() -> None:
    with pytest.raises(TypeError, match=r"^argument 'b'") as caught:
        pq.enqueue(native.add, 1, b=object())
    assert isinstance(caught.value, pq.UnserializableArgument)
    assert not TaskRow.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_get_result_reads_back_what_enqueue_returned() -> None:
    now = timezone.now()
    backend = framework.task_backends["default"]
    results = [
        multiply.enqueue(2, 3),
        multiply.using(run_after=now - timedelta(hours=2)).enqueue(2, 3),
        multiply.using(run_after=now + timedelta(hours=2)).enqueue(2, 3),
        multiply.using(priority=-100, queue_name="mail").enqueue(a=1, b=2),
        multiply.using(priority=100).enqueue(1, 2),
        multiply.using(priority=-2).enqueue(1, 2),
    ]
    for result in results:
        assert backend.get_result(result.id) == result
        assert in_event_loop(lambda r=result: multiply.aget_result(r.id)) == result
    assert results[1].task.run_after == now - timedelta(hours=2)  # the past is kept too
    assert backend.get_result(results[0].id).task.run_after is None


# -- run by a real worker ----------------------------------------------------------------


def test_status_moves_ready_running_successful(start_worker: Any) -> None:
    result = wait_for_release.enqueue("gate")
    worker = start_worker("--concurrency", "1", settings=WORKER_SETTINGS)

    def running() -> bool:
        result.refresh()
        return result.status == TaskResultStatus.RUNNING

    wait_until(running, 60, lambda: f"the task to run; worker log:\n{worker.output()}")
    assert result.started_at is not None and result.finished_at is None
    assert result.attempts == 1 and not result.is_finished
    with pytest.raises(ValueError, match="not finished"):
        result.return_value  # noqa: B018

    RunLog.objects.create(event="release", pid=0, value="gate")

    def finished() -> bool:
        in_event_loop(result.arefresh)
        return result.is_finished

    wait_until(finished, 60, lambda: f"the task to finish; worker log:\n{worker.output()}")
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == "gate"
    assert result.finished_at >= result.started_at >= result.enqueued_at  # type: ignore[operator]
    assert result.last_attempted_at == result.started_at
    assert len(result.worker_ids) == 1


def test_results_errors_and_signals_agree(start_worker: Any) -> None:
    ok = multiply.enqueue(6, 7)
    normalized = returns_a_tuple.enqueue()
    echoed = async_echo.enqueue({"nested": [1, "two"]})
    failed = overheat.enqueue(400)
    unencodable = returns_an_object.enqueue()
    verbose = overheat_verbosely.enqueue(500)
    grouped = overheat_in_groups.enqueue()
    exited = exits.enqueue()
    burst(start_worker)

    results = (ok, normalized, echoed, failed, unencodable, verbose, grouped, exited)
    for result in results:
        result.refresh()

    # Receivers in the worker heard what get_result reads now: status, errors and value.
    for result in results:
        started = {"status": "RUNNING", "errors": [], "value": None}
        assert heard(result.id, "contract_started") == [started]
        finished = {
            "status": result.status,
            "errors": [error.exception_class_path for error in result.errors],
            "value": result.return_value if result.status == "SUCCESSFUL" else None,
        }
        assert heard(result.id, "contract_finished") == [finished]

    assert [ok.return_value, normalized.return_value, echoed.return_value] == [
        42,
        [1, [2, 3]],  # JSON, as Django's backends store a tuple
        {"nested": [1, "two"]},
    ]

    assert failed.status == TaskResultStatus.FAILED
    [error] = failed.errors
    assert error.exception_class_path == "tests.test_tasks_contract.Overheated"
    assert error.exception_class is Overheated
    assert "in overheat" in error.traceback
    assert error.traceback.rstrip().endswith("Overheated: 400 degrees is too hot")
    with pytest.raises(ValueError, match="Task failed"):
        failed.return_value  # noqa: B018
    # The class is the one raised, whatever lines its message and notes add.
    assert verbose.errors[0].exception_class is Overheated
    assert "Hint: let it cool down" in verbose.errors[0].traceback
    assert grouped.errors[0].exception_class is ExceptionGroup
    assert exited.errors[0].exception_class is SystemExit

    # A return value that cannot be stored fails the run as Django's backends fail it.
    assert unencodable.status == TaskResultStatus.FAILED
    [error] = unencodable.errors
    assert error.exception_class is TypeError
    assert "Unsupported type" in error.traceback
    assert unencodable.finished_at is not None
    assert TaskRow.objects.get(pk=int(unencodable.id)).status == Status.FAILED


def test_choices_and_other_str_and_int_subclasses_are_json_values(start_worker: Any) -> None:
    # Django's backends take them (json.dumps writes them as the string or number they are).
    result = describe_choices.enqueue(Size.SMALL, levels={Size.LARGE: Level.LOW})
    assert result.args == ["s"] and result.kwargs == {"levels": {"l": 1}}
    burst(start_worker)
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL, result.errors
    assert result.return_value == {"seen": ["str", "s", {"str": "int"}], "back": "l", "level": 1}
    value = result.return_value
    assert (type(value["back"]), type(value["level"])) == (str, int)
    assert heard(result.id, "contract_finished")[0]["status"] == "SUCCESSFUL"


def test_context_carries_the_attempt_and_the_result_id(start_worker: Any) -> None:
    result = report_context.enqueue("first")
    burst(start_worker)
    result.refresh()
    assert result.return_value == {"id": result.id, "attempt": 1, "label": "first"}


def test_run_after_in_the_past_runs_now_and_in_the_future_waits(start_worker: Any) -> None:
    now = timezone.now()
    past = multiply.using(run_after=now - timedelta(days=1)).enqueue(2, 2)
    future = multiply.using(run_after=now + timedelta(days=1)).enqueue(3, 3)
    burst(start_worker)
    past.refresh()
    future.refresh()
    assert (past.status, past.return_value) == (TaskResultStatus.SUCCESSFUL, 4)
    assert future.status == TaskResultStatus.READY
    assert multiply.get_result(past.id).task.run_after == now - timedelta(days=1)
    assert multiply.get_result(future.id).task.run_after == now + timedelta(days=1)


def test_higher_django_priority_runs_first(start_worker: Any) -> None:
    for priority, label in [(-100, "lowest"), (0, "default"), (100, "highest"), (10, "above")]:
        record.using(priority=priority).enqueue(label)
    burst(start_worker, "--concurrency", "1")
    ran = RunLog.objects.filter(event="contract_ran").order_by("id")
    assert [line.value for line in ran] == ["highest", "above", "default", "lowest"]


@pytest.mark.django_db
def test_run_pending_tasks_holds_the_same_contract_inline() -> None:
    ok, unencodable = multiply.enqueue(6, 7), returns_an_object.enqueue()
    run_pending_tasks()
    ok.refresh()
    unencodable.refresh()
    assert (ok.status, ok.return_value) == (TaskResultStatus.SUCCESSFUL, 42)
    assert unencodable.status == TaskResultStatus.FAILED
    assert unencodable.errors[0].exception_class is TypeError
    assert heard(unencodable.id, "contract_finished") == [
        {"status": "FAILED", "errors": ["builtins.TypeError"], "value": None}
    ]
