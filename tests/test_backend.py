"""PQBackend: standard django.tasks code, written to pq_tasks and run by a real pq_worker.

The tasks below are module-level ``@task`` objects, as in a user's project. They are built
while the test settings name Django's default backend; every test switches ``TASKS`` to
PQBackend, and ``Task.enqueue`` looks its backend up at call time.
"""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import django
import pytest
from asgiref.sync import sync_to_async
from django.db import connections, transaction
from django.dispatch import receiver
from django.test.utils import override_settings
from django.utils import timezone

from django_pq.backend import (
    PQBackend,
    PQTask,
    TaskRunError,
    django_priority,
    pq_priority,
)
from django_pq.exceptions import TaskRefused
from django_pq.models import Priority, Status
from django_pq.models import Task as TaskRow
from tests.tasks_framework import (
    InvalidTask,
    TaskContext,
    TaskResultDoesNotExist,
    TaskResultMismatch,
    TaskResultStatus,
    pq_settings_for,
    task,
    task_backends,
    task_enqueued,
    task_finished,
    task_started,
)
from tests.testapp.models import RunLog
from tests.worker import conftest as worker_fixtures
from tests.worker.conftest import WorkerProcess, run_burst

# The real-worker fixture of tests/worker, shared with this module.
start_worker = worker_fixtures.start_worker

WORKER_SETTINGS = pq_settings_for("tests.test_backend")


@task
def add(a: int, b: int) -> int:
    return a + b


@task
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@task
def fail(message: str) -> None:
    raise ValueError(message)


@task
def record(label: str) -> str:
    RunLog.objects.create(event="ran", pid=os.getpid(), value=label)
    return label


@task
def takes_priority(priority: str, queue: str) -> list[str]:
    """Its keywords share names with enqueue options; they must reach the function."""
    return [priority, queue]


def flaky(context: TaskContext, key: str) -> dict[str, Any]:
    """Fails on its first attempt; reports what its context said."""
    RunLog.objects.create(
        task_id=int(context.task_result.id), event="attempt", pid=0, value=str(context.attempt)
    )
    if context.attempt < 2:
        raise RuntimeError(f"attempt {context.attempt} fails")
    return {"attempt": context.attempt, "id": context.task_result.id, "key": key}


# Built directly (not with @task), so django-pq's options work under any default backend.
def pq_task(func: Any, **options: Any) -> PQTask:
    """A PQTask built directly; Django 6.0's Task has no defaults for these fields."""
    fields = {"priority": 0, "backend": "default", "queue_name": "default", "run_after": None}
    return PQTask(func=func, **fields, **options)


flaky = pq_task(flaky, takes_context=True, max_attempts=2)


@receiver(task_started)
def _log_started(sender: Any, task_result: Any, **kwargs: Any) -> None:
    RunLog.objects.create(
        task_id=int(task_result.id), event="django_started", pid=os.getpid(),
        value=f"{sender.__name__}:{task_result.status}",
    )  # fmt: skip


@receiver(task_finished)
def _log_finished(sender: Any, task_result: Any, **kwargs: Any) -> None:
    RunLog.objects.create(
        task_id=int(task_result.id), event="django_finished", pid=os.getpid(),
        value=f"{sender.__name__}:{task_result.status}",
    )  # fmt: skip


@pytest.fixture(autouse=True)
def pq_backend(settings: Any) -> None:
    settings.TASKS = WORKER_SETTINGS["TASKS"]
    settings.PQ_ALLOWED_MODULES = WORKER_SETTINGS["PQ_ALLOWED_MODULES"]


def burst(start_worker: Callable[..., WorkerProcess], *args: str, **settings: Any) -> WorkerProcess:
    return run_burst(start_worker, *args, settings={**WORKER_SETTINGS, **settings})


# -- the backend and its mapping ---------------------------------------------------------


def test_backend_supports_everything_django_asks_about() -> None:
    backend = task_backends["default"]
    assert isinstance(backend, PQBackend)
    assert backend.supports_defer
    assert backend.supports_async_task
    assert backend.supports_get_result
    assert backend.supports_priority


def test_priority_maps_monotonically_with_django_default_on_normal() -> None:
    mapped = [pq_priority(p) for p in range(-100, 101)]
    assert mapped == sorted(mapped)
    assert (pq_priority(-100), pq_priority(0), pq_priority(100)) == (0, Priority.NORMAL, 100)
    assert all(0 <= value <= 100 for value in mapped)
    assert all(pq_priority(django_priority(value)) == value for value in range(0, 101))


# -- enqueueing --------------------------------------------------------------------------


@pytest.mark.django_db
def test_enqueue_writes_a_row_with_queue_priority_and_run_at() -> None:
    run_after = timezone.now() + timedelta(hours=1)
    result = add.using(priority=50, queue_name="mail", run_after=run_after).enqueue(2, b=3)
    row = TaskRow.objects.get(pk=int(result.id))
    assert row.name == "tests.test_backend:add"
    assert (row.queue, row.priority, row.run_at) == ("mail", 75, run_after)
    assert row.decoded_arguments() == ((2,), {"b": 3})
    assert result.status == TaskResultStatus.READY
    assert (result.args, result.kwargs, result.enqueued_at) == ([2], {"b": 3}, row.created_at)


@pytest.mark.django_db
def test_enqueue_joins_the_callers_transaction() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        add.enqueue(1, 1)
        raise RuntimeError("roll back")
    assert not TaskRow.objects.exists()


@pytest.mark.django_db
def test_task_enqueued_is_sent_on_commit_only(
    django_capture_on_commit_callbacks: Any,
) -> None:
    heard: list[str] = []

    def listen(sender: Any, task_result: Any, **kwargs: Any) -> None:
        heard.append(task_result.id)

    task_enqueued.connect(listen)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            result = add.enqueue(1, 2)
            assert heard == []
        with pytest.raises(RuntimeError), transaction.atomic():
            add.enqueue(3, 4)
            raise RuntimeError("roll back")
    finally:
        task_enqueued.disconnect(listen)
    assert heard == [result.id]


@pytest.mark.django_db
def test_keywords_named_like_enqueue_options_go_to_the_task() -> None:
    result = takes_priority.using(priority=100).enqueue(priority="mine", queue="also mine")
    row = TaskRow.objects.get(pk=int(result.id))
    assert row.decoded_arguments() == ((), {"priority": "mine", "queue": "also mine"})
    assert (row.priority, row.queue) == (100, "default")


@pytest.mark.django_db
def test_arguments_must_be_json_values() -> None:
    with pytest.raises(TaskRefused, match=r"tests\.test_backend\.add.*JSON values"):
        add.enqueue(timezone.now(), 1)
    assert not TaskRow.objects.exists()


@pytest.mark.django_db
def test_pq_options_from_using_reach_the_row() -> None:
    result = flaky.using(max_runtime=30, client_id="flaky-1").enqueue(key="k")
    row = TaskRow.objects.get(pk=int(result.id))
    assert (row.max_attempts, row.max_runtime, row.client_id) == (2, 30.0, "flaky-1")


@pytest.mark.skipif(
    django.VERSION[:2] == (6, 0),
    reason="Django 6.0's @task takes no backend options (6.1 and the backport do)",
)
@pytest.mark.django_db
def test_pq_options_on_the_decorator_reach_the_row() -> None:
    decorated = task(max_attempts=4, max_runtime=5)(add.func)  # @task(...) on PQBackend
    assert isinstance(decorated, PQTask)
    row = TaskRow.objects.get(pk=int(decorated.enqueue(1, 2).id))
    assert (row.max_attempts, row.max_runtime) == (4, 5.0)


def test_bad_pq_options_are_refused_when_the_task_is_defined() -> None:
    with pytest.raises(Exception, match="max_attempts must be an integer >= 1"):
        pq_task(add.func, max_attempts=0)
    with pytest.raises(Exception, match="max_runtime must be a positive number"):
        pq_task(add.func, max_runtime=-1)
    # enqueue()'s own rules, so a value the column cannot hold is refused here, not later.
    with pytest.raises(Exception, match="max_attempts must be an integer >= 1 and <= 2147483647"):
        pq_task(add.func, max_attempts=2**40)
    with pytest.raises(Exception, match="max_runtime must be a positive number"):
        pq_task(add.func, max_runtime=float("inf"))


# -- results -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_get_result_of_unknown_ids_and_other_tasks() -> None:
    backend = task_backends["default"]
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result("123456")
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result("not-a-number")
    result = add.enqueue(1, 2)
    # Digits str.isdigit() takes but that are not ASCII: "²" (int() refuses it) and the
    # Arabic-Indic form of this task's id (int() reads it as the id: another string, same row).
    arabic = result.id.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    for odd in ("²", arabic, f"{result.id}\n", "9" * 30):
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(odd)
        with pytest.raises(TaskResultDoesNotExist):
            asyncio.run(backend.aget_result(odd))
    with pytest.raises(TaskResultMismatch):
        record.get_result(result.id)
    assert add.get_result(result.id).id == result.id


@pytest.mark.django_db
def test_rows_enqueued_natively_are_not_django_results() -> None:
    from django_pq.enqueueing import enqueue
    from tests.testapp.tasks import add as native_add

    row = enqueue(native_add, 1, 2)
    with pytest.raises(TaskResultDoesNotExist, match=r"enqueued with django_pq\.enqueue"):
        task_backends["default"].get_result(str(row.pk))


@pytest.mark.django_db
def test_cancelled_and_lost_runs_read_as_failed_with_task_run_error() -> None:
    from django_pq.enqueueing import cancel

    result = add.enqueue(1, 2)
    cancel(int(result.id))
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class is TaskRunError


# -- run by a real worker ----------------------------------------------------------------


def test_worker_runs_sync_async_and_failing_tasks(start_worker: Any) -> None:
    ok, coroutine, broken = add.enqueue(2, 3), async_add.enqueue(4, 5), fail.enqueue("boom")
    assert ok.status == TaskResultStatus.READY
    burst(start_worker)

    ok.refresh()
    assert ok.status == TaskResultStatus.SUCCESSFUL
    assert ok.return_value == 5
    assert ok.attempts == 1
    assert ok.started_at is not None and ok.finished_at is not None
    assert ok.finished_at >= ok.started_at >= ok.enqueued_at  # type: ignore[operator]
    assert async_add.get_result(coroutine.id).return_value == 9

    failed = fail.get_result(broken.id)
    assert failed.status == TaskResultStatus.FAILED
    assert failed.is_finished
    [error] = failed.errors
    assert error.exception_class is ValueError
    assert "boom" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        failed.return_value  # noqa: B018


def test_deferred_task_waits_for_run_after(start_worker: Any) -> None:
    run_after = timezone.now() + timedelta(hours=1)
    result = add.using(run_after=run_after).enqueue(1, 1)
    burst(start_worker)
    result.refresh()
    assert result.status == TaskResultStatus.READY
    assert result.task.run_after == run_after
    # Let the hour pass, as far as the queue is concerned.
    TaskRow.objects.filter(pk=int(result.id)).update(run_at=timezone.now())
    burst(start_worker)
    result.refresh()
    assert result.return_value == 2


def test_higher_django_priority_runs_first(start_worker: Any) -> None:
    record.using(priority=-50).enqueue("low")
    record.enqueue("default")
    record.using(priority=90).enqueue("high")
    burst(start_worker, "--concurrency", "1")
    ran = list(RunLog.objects.filter(event="ran").order_by("id").values_list("value", flat=True))
    assert ran == ["high", "default", "low"]


def test_context_attempt_retries_and_django_signals(start_worker: Any) -> None:
    result = flaky.enqueue(key="k")
    task_id = int(result.id)
    # No retry delay, so the retry is ready before the burst worker looks again.
    burst(start_worker, PQ_RETRY_DELAY=0, PQ_RETRY_MAX_DELAY=0)
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL, TaskRow.objects.get(pk=task_id).error
    assert result.return_value == {"attempt": 2, "id": result.id, "key": "k"}
    assert result.attempts == 2
    assert len(set(result.worker_ids)) == 1

    attempts = RunLog.objects.filter(task_id=task_id, event="attempt").order_by("id")
    assert [log.value for log in attempts] == ["1", "2"]
    events = list(
        RunLog.objects.filter(task_id=task_id, event__startswith="django_")
        .order_by("id")
        .values_list("event", "value")
    )
    assert events == [
        ("django_started", "PQBackend:RUNNING"),
        ("django_finished", "PQBackend:FAILED"),
        ("django_started", "PQBackend:RUNNING"),
        ("django_finished", "PQBackend:SUCCESSFUL"),
    ]
    # Sent in the task's child, never in the worker parent or this test process.
    child_pids = set(
        RunLog.objects.filter(task_id=task_id, event__startswith="django_").values_list(
            "pid", flat=True
        )
    )
    assert os.getpid() not in child_pids
    assert len(child_pids) == 2


def test_aenqueue_and_aget_result(start_worker: Any) -> None:
    async def in_event_loop(work: Callable[[], Any]) -> Any:
        try:
            return await work()
        finally:
            # The ORM ran in asgiref's executor thread: close that thread's connection.
            await sync_to_async(connections.close_all)()

    result_id = asyncio.run(in_event_loop(lambda: add.aenqueue(20, 22))).id
    assert TaskRow.objects.get(pk=int(result_id)).status == Status.PENDING
    burst(start_worker)

    result = asyncio.run(in_event_loop(lambda: add.aget_result(result_id)))
    assert result.return_value == 42
    with pytest.raises(TaskResultDoesNotExist):
        asyncio.run(in_event_loop(lambda: task_backends["default"].aget_result("999999")))


# -- checks ------------------------------------------------------------------------------


def test_check_needs_django_pq_installed() -> None:
    backend = task_backends["default"]
    with override_settings(INSTALLED_APPS=["django.contrib.contenttypes"]):
        [error] = backend.check()
    assert error.id == "django_pq.E101"
    assert "INSTALLED_APPS" in error.hint


def test_check_needs_postgres(settings: Any) -> None:
    lite = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
    with warnings.catch_warnings():
        # Django warns that overriding DATABASES is unusual; the check only reads it.
        warnings.filterwarnings("ignore", "Overriding setting DATABASES", UserWarning)
        with override_settings(DATABASES={**settings.DATABASES, "lite": lite}, PQ_DATABASE="lite"):
            [error] = task_backends["default"].check()
    assert error.id == "django_pq.E102"
    assert "PostgreSQL" in error.msg


def test_check_passes_on_postgres() -> None:
    assert task_backends["default"].check() == []


@pytest.mark.django_db
def test_task_policies_from_using_reach_the_row() -> None:
    import django_pq as pq

    policy = pq.Retry(3, on=["exception", "worker_lost"], delay=0)
    declared = pq_task(add.func)
    result = declared.using(
        retry=policy, soft_runtime=5, max_runtime=10, keep_result=False
    ).enqueue(1, 2)
    row = TaskRow.objects.get(pk=int(result.id))
    assert (row.max_attempts, row.retry_policy["on"]) == (3, ["exception", "worker_lost"])
    assert (row.soft_runtime, row.max_runtime, row.keep_result) == (5.0, 10.0, 0.0)


@pytest.mark.django_db
def test_flow_keys_from_using_reach_the_row_and_bad_ones_are_refused() -> None:
    declared = pq_task(add.func)
    result = declared.using(limit_key="stripe", fair_key="tenant:1").enqueue(1, 2)
    row = TaskRow.objects.get(pk=int(result.id))
    assert (row.limit_key, row.fair_key, row.fair_rank) == ("stripe", "tenant:1", 1)
    with pytest.raises(InvalidTask, match="limit_key"):
        declared.using(limit_key="").enqueue(1, 2)


def test_bad_task_policies_are_refused_when_the_task_is_defined() -> None:
    with pytest.raises(Exception, match=r"retry must be a pq\.Retry policy"):
        pq_task(add.func, retry=3)
    with pytest.raises(Exception, match=r"soft_runtime .* must be below max_runtime"):
        pq_task(add.func, soft_runtime=10, max_runtime=5)
