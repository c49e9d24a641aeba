"""``PQBackend``: Django's tasks framework (``django.tasks``) on django-pq's tables and worker.

Standard ``@task`` functions are written to ``pq_tasks`` by django-pq's own enqueue path, so
they join the caller's transaction, and ``manage.py pq_worker`` runs them in a forked child
with the same isolation, limits, retries and admin as native tasks.

Django >= 6.0 ships ``django.tasks``; on Django 5.2 install the ``django-tasks`` backport
(``pip install "django-pq-tasks[tasks]"``). The built-in framework wins when both exist.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import traceback
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.core import checks
from django.db import transaction
from django.utils import timezone

from django_pq.checks import check_database
from django_pq.codec import encode_payload, encode_value
from django_pq.conf import pq_settings
from django_pq.enqueueing import (
    RESERVED_OPTIONS,
    check_options,
    enqueue,
    enqueue_many,
    prepare,
)
from django_pq.exceptions import NotATaskFunction, PQError, TaskRefused, UnserializableArgument
from django_pq.models import ErrorCode, Status
from django_pq.models import Task as TaskRow
from django_pq.retry_policy import Retry
from django_pq.signals import TaskRun
from django_pq.task_paths import resolve

if TYPE_CHECKING:
    from django.tasks import Task, TaskContext, TaskResult, TaskResultStatus
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TaskError
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json
else:
    try:
        from django.tasks import Task, TaskContext, TaskResult, TaskResultStatus
        from django.tasks.backends.base import BaseTaskBackend
        from django.tasks.base import TaskError
        from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
        from django.tasks.signals import task_enqueued, task_finished, task_started
        from django.utils.json import normalize_json
    except ImportError:  # Django 5.2: the django-tasks backport
        try:
            from django_tasks.backends.base import BaseTaskBackend
            from django_tasks.base import (
                Task,
                TaskContext,
                TaskError,
                TaskResult,
                TaskResultStatus,
            )
            from django_tasks.exceptions import InvalidTaskError as InvalidTask
            from django_tasks.exceptions import TaskResultDoesNotExist
            from django_tasks.signals import task_enqueued, task_finished, task_started
            from django_tasks.utils import normalize_json
        except ImportError as error:
            from django.core.exceptions import ImproperlyConfigured

            raise ImproperlyConfigured(
                "django_pq.backend.PQBackend needs Django's tasks framework: Django >= 6.0 "
                "has it built in; on Django 5.2 install the backport with "
                "pip install 'django-pq-tasks[tasks]' (or pip install django-tasks)."
            ) from error

__all__ = [
    "PQBackend",
    "PQTask",
    "TaskRunError",
    "django_priority",
    "pq_priority",
    "run_django_task",
]

#: Options of ``PQTask`` that map onto ``django_pq.enqueue`` options of the same name.
PQ_TASK_OPTIONS = (
    "max_attempts",
    "max_runtime",
    "client_id",
    "soft_runtime",
    "retry",
    "keep_result",
    "limit_key",
    "fair_key",
)


class TaskRunError(PQError):
    """Stands for a run that ended without an exception of the task's own (killed by a
    signal, its worker lost, cancelled, ...): ``TaskError.exception_class`` of such runs."""


def pq_priority(django_priority: int) -> int:
    """Django's priority (-100..100, default 0) on pq's scale (0..100, default NORMAL=50).

    Halving keeps the order (a higher Django priority never lands lower) and puts the
    named levels where Django users expect them: -100 → BATCH, 0 → NORMAL, 100 → CRITICAL.
    """
    return (int(django_priority) + 100) // 2


def django_priority(pq_priority: int) -> int:
    """The inverse of :func:`pq_priority` (exact for even Django priorities)."""
    return int(pq_priority) * 2 - 100


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PQTask(Task):  # type: ignore[type-arg]
    """A ``django.tasks`` Task with django-pq's own options.

    Set them on the decorator (``@task(max_attempts=3, max_runtime=60,
    retry=pq.Retry(3, on=["exception"]))``, Django >= 6.1 or the backport) or per call with
    ``.using(...)``. ``None`` means django-pq's default.
    """

    max_attempts: int | None = None
    max_runtime: float | None = None
    client_id: str | None = None
    soft_runtime: float | None = None
    retry: Retry | None = None
    keep_result: float | bool | None = None
    #: Flow keys (strings: a django.tasks Task's options are values, not functions).
    limit_key: str | None = None
    fair_key: str | None = None

    def using(
        self,
        *,
        priority: int | None = None,
        queue_name: str | None = None,
        run_after: datetime | None = None,
        backend: str | None = None,
        max_attempts: int | None = None,
        max_runtime: float | None = None,
        client_id: str | None = None,
        soft_runtime: float | None = None,
        retry: Retry | None = None,
        keep_result: float | bool | None = None,
        limit_key: str | None = None,
        fair_key: str | None = None,
    ) -> PQTask:
        """A copy with changed defaults; also takes django-pq's options."""
        copy: Any = Task.using(
            self, priority=priority, queue_name=queue_name, run_after=run_after, backend=backend
        )
        changes: dict[str, Any] = {
            name: value
            for name, value in (
                ("max_attempts", max_attempts),
                ("max_runtime", max_runtime),
                ("client_id", client_id),
                ("soft_runtime", soft_runtime),
                ("retry", retry),
                ("keep_result", keep_result),
                ("limit_key", limit_key),
                ("fair_key", fair_key),
            )
            if value is not None
        }
        return dataclasses.replace(copy, **changes) if changes else copy  # type: ignore[no-any-return]


def _options(task: Task) -> dict[str, Any]:  # type: ignore[type-arg]
    # A plain Task (made for another backend, then .using(backend=...)) has none of them.
    return {name: getattr(task, name, None) for name in PQ_TASK_OPTIONS}


def _json_value(value: Any) -> Any:
    """``normalize_json(value)`` in plain ``str``/``int``/``float``/``bool``, as JSON reads
    them back: a ``TextChoices`` or ``IntEnum`` member is the string or number it stands
    for (Django's backends take it; django-pq's codec would refuse the subclass)."""
    return _plain(normalize_json(value))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, bool):  # an int, and it cannot be subclassed
        return value
    for kind, convert in _PLAIN:
        if isinstance(value, kind) and type(value) is not kind:
            return convert(value)
    return value


# Through the base class: a subclass's own __str__ or __int__ is not what JSON writes.
_PLAIN: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (str, str.__str__),
    (int, int.__int__),
    (float, float.__float__),
)


def _normalized(task: Task, args: Iterable[Any], kwargs: dict[str, Any]) -> tuple[Any, Any]:  # type: ignore[type-arg]
    """The arguments as JSON values, as Django's contract asks; refused with a
    ``TypeError`` (:class:`UnserializableArgument`) naming the first one that is not."""
    args = list(args)
    named = [(f"positional argument {n}", value) for n, value in enumerate(args, start=1)]
    named += [(f"argument {name!r}", value) for name, value in kwargs.items()]
    values = []
    for where, value in named:
        try:
            values.append(_json_value(value))
        except (TypeError, ValueError) as error:
            raise UnserializableArgument(
                f"{where} of {task.module_path} cannot be stored: {error}. django.tasks "
                "arguments must be JSON values (str, int, float, bool, None, lists and "
                "dicts). Pass ids and ISO strings, or enqueue with django_pq.enqueue(), "
                "which also round-trips datetime, Decimal, UUID and the like."
            ) from error
    return values[: len(args)], dict(zip(kwargs, values[len(args) :], strict=True))


class PQBackend(BaseTaskBackend):
    """Runs ``django.tasks`` tasks on django-pq.

    ``TASKS = {"default": {"BACKEND": "django_pq.backend.PQBackend"}}``. ``QUEUES`` works as
    for every backend (``[]`` allows any queue name).
    """

    task_class = PQTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def validate_task(self, task: Task) -> None:  # type: ignore[type-arg]
        """Django's rules, plus django-pq's options where the task sets them."""
        super().validate_task(task)
        options = _options(task)
        try:
            # The same rules as enqueue()'s, raised as django.tasks' own error type.
            check_options({k: v for k, v in options.items() if k != "client_id"})
        except TaskRefused as refused:
            raise InvalidTask(str(refused)) from None

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:  # type: ignore[type-arg]
        """Write the task as a ``pq_tasks`` row on ``PQ_DATABASE``, in the caller's transaction.

        ``task_enqueued`` is sent when that transaction commits (at once in autocommit), so
        receivers never hear of a task that a rollback removed.
        """
        self.validate_task(task)
        json_args, json_kwargs = _normalized(task, args, kwargs)
        row = _write_row(task, json_args, json_kwargs)
        result = self._result(task, row)
        transaction.on_commit(
            functools.partial(task_enqueued.send, type(self), task_result=result),
            using=pq_settings.DATABASE,
        )
        return result

    def get_result(self, result_id: str) -> TaskResult:  # type: ignore[type-arg]
        """The task's current state, read from its row."""
        pk = _row_id(result_id)
        try:
            row = TaskRow.objects.using(pq_settings.DATABASE).get(pk=pk)
        except TaskRow.DoesNotExist:
            raise _missing(result_id) from None
        return self._result(None, row)

    async def aget_result(self, result_id: str) -> TaskResult:  # type: ignore[type-arg]
        """See :meth:`get_result`."""
        pk = _row_id(result_id)
        try:
            row = await TaskRow.objects.using(pq_settings.DATABASE).aget(pk=pk)
        except TaskRow.DoesNotExist:
            raise _missing(result_id) from None
        return self._result(None, row)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        """``django_pq.E101``: django_pq is not installed; ``django_pq.E102``: not PostgreSQL."""
        if not apps.is_installed("django_pq"):
            return [
                checks.Error(
                    f"TASKS[{self.alias!r}] uses django_pq.backend.PQBackend, but django_pq "
                    "is not in INSTALLED_APPS, so its tables and worker do not exist.",
                    hint="Add 'django_pq' to INSTALLED_APPS and run manage.py migrate.",
                    id="django_pq.E101",
                )
            ]
        return [
            checks.Error(
                f"TASKS[{self.alias!r}] uses PQBackend: {error.msg}",
                hint=error.hint,
                id="django_pq.E102",
            )
            for error in check_database()
        ]

    # -- reading rows --------------------------------------------------------------------

    def _task_of(self, row: TaskRow) -> Task:  # type: ignore[type-arg]
        try:
            found = resolve(row.name)
        except NotATaskFunction as error:
            raise TaskResultDoesNotExist(
                f"Task {row.pk} names {row.name}, which cannot be loaded here: {error}"
            ) from error
        if not isinstance(found, Task):
            raise TaskResultDoesNotExist(
                f"Task {row.pk} ({row.name}) was enqueued with django_pq.enqueue(), not "
                "through django.tasks; read it with django_pq.Task.objects.get(pk=...)."
            )
        # An insert without run_at takes the same database clock as created_at, so any other
        # value is one the caller asked for, in the past as well as in the future.
        run_after = row.run_at if row.run_at != row.created_at else None
        return dataclasses.replace(
            found,
            priority=django_priority(row.priority),
            queue_name=row.queue,
            run_after=run_after,
            backend=self.alias,
        )

    def _result(self, task: Task | None, row: TaskRow) -> TaskResult:  # type: ignore[type-arg]
        task = task if task is not None else self._task_of(row)
        args, kwargs = row.decoded_arguments()
        worker = [str(row.worker_id)] if row.worker_id else []
        result: TaskResult = TaskResult(  # type: ignore[type-arg]
            task=task,
            id=str(row.pk),
            status=_STATUS[Status(row.status)],
            enqueued_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            last_attempted_at=row.started_at,
            args=list(args),
            kwargs=kwargs,
            backend=self.alias,
            errors=_errors(row),
            # pq keeps the last worker only; one entry per attempt keeps `attempts` right.
            worker_ids=worker * row.attempts,
        )
        if row.status == Status.COMPLETED:
            object.__setattr__(result, "_return_value", row.decoded_result())
        return result


def _row_id(result_id: str) -> int:
    """The row id a result id names, or :class:`TaskResultDoesNotExist`.

    Only ASCII digits: ``str.isdigit`` also takes "\\u00b2" (which ``int`` refuses) and
    "\\u0661" (which ``int`` reads as 1, another task's id).
    """
    if not _RESULT_ID.fullmatch(str(result_id)):
        raise _missing(result_id)
    return int(result_id)


def _missing(result_id: str) -> Exception:
    return TaskResultDoesNotExist(f"There is no django-pq task with id {result_id!r}.")


_RESULT_ID = re.compile(r"[0-9]+")

_STATUS = {
    Status.PENDING: TaskResultStatus.READY,
    # Waiting for other tasks (after=, chains, batches): not running yet, so READY.
    Status.BLOCKED: TaskResultStatus.READY,
    Status.RUNNING: TaskResultStatus.RUNNING,
    Status.COMPLETED: TaskResultStatus.SUCCESSFUL,
    Status.FAILED: TaskResultStatus.FAILED,
    # django.tasks has no "cancelled": a cancelled task failed to run, with TaskRunError.
    Status.CANCELLED: TaskResultStatus.FAILED,
}

_CLASS_FOR_CODE: dict[str, str] = {
    ErrorCode.TIMEOUT: "builtins.TimeoutError",
    ErrorCode.MEMORY: "builtins.MemoryError",
}
# The line naming the exception in a formatted traceback: "ValueError: ..." or "pkg.Error".
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")
#: Top-level traceback headers, with the margin of the lines under them.
_TRACEBACK_HEADERS = {
    "Traceback (most recent call last):": "",
    "  + Exception Group Traceback (most recent call last):": "  | ",
}
_HOOK_LINE = re.compile(r"^Hook .+ raised:$")


def _exception_class_path(error_code: str, error: str) -> str:
    if error_code in _CLASS_FOR_CODE:
        return _CLASS_FOR_CODE[error_code]
    if error_code == ErrorCode.EXCEPTION:
        lines = error.splitlines()
        # Hook failures are appended after the task's own traceback.
        hooks = [n for n, line in enumerate(lines) if _HOOK_LINE.match(line)]
        lines = lines[: hooks[0]] if hooks else lines
        # The exception line is the first line at the margin after the last top-level
        # traceback header (the outermost of a chain); the message's further lines and the
        # notes follow it. An exception group draws its margin as "  | ".
        headers = [n for n, line in enumerate(lines) if line in _TRACEBACK_HEADERS]
        margin = _TRACEBACK_HEADERS[lines[headers[-1]]] if headers else ""
        for line in lines[headers[-1] + 1 :] if headers else lines:
            line = line.removeprefix(margin)
            if not line[:1].isspace():
                match = _EXCEPTION_LINE.match(line)
                if match:
                    named = match.group(1)
                    return named if "." in named else f"builtins.{named}"
                break
    return f"{TaskRunError.__module__}.{TaskRunError.__qualname__}"


def _errors(row: TaskRow) -> list[TaskError]:
    if not row.error_code:
        return []
    return [
        TaskError(
            exception_class_path=_exception_class_path(row.error_code, row.error),
            traceback=row.error or str(ErrorCode(row.error_code).label),
        )
    ]


def _write_row(task: Task, args: list[Any], kwargs: dict[str, Any]) -> TaskRow:  # type: ignore[type-arg]
    options: dict[str, Any] = {
        "queue": task.queue_name,
        "priority": pq_priority(task.priority),
        "run_at": task.run_after,
        **{name: value for name, value in _options(task).items() if value is not None},
    }
    if not set(kwargs) & set(RESERVED_OPTIONS):
        return enqueue(task, *args, **kwargs, **options)  # type: ignore[arg-type]
    # The task itself has a keyword named like an enqueue option (say, `priority`): encode
    # the call separately so the option and the argument cannot be confused.
    prepared = dataclasses.replace(
        prepare(task, **options),  # type: ignore[arg-type]
        payload=encode_payload(tuple(args), kwargs),
    )
    return enqueue_many([prepared])[0]


def run_django_task(
    task: Task,  # type: ignore[type-arg]
    run: TaskRun,
    call: Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any],
) -> Any:
    """Run a ``django.tasks`` task in the worker's child, as ``call`` runs native ones.

    Sends Django's ``task_started`` and ``task_finished`` around the run and passes a
    ``TaskContext`` (with this attempt) to tasks that take one. Raises what the task raised.
    """
    backend_class = PQBackend
    row = TaskRow.objects.using(pq_settings.DATABASE).get(pk=run.id)
    task_result = PQBackend(task.backend, {"QUEUES": []})._result(task, row)
    # The row read here is a snapshot from before the run: make it look like this attempt.
    object.__setattr__(task_result, "status", TaskResultStatus.RUNNING)
    object.__setattr__(task_result, "errors", [])
    task_started.send(sender=backend_class, task_result=task_result)
    args = (TaskContext(task_result=task_result), *run.args) if task.takes_context else run.args
    try:
        # Stored as Django's own backends store it (normalize_json), and checked against the
        # codec before task_finished is sent: a value that cannot be stored fails the run
        # with TypeError, and receivers hear FAILED, as get_result will say.
        value = _json_value(call(task.func, args, run.kwargs))
        encode_value(value, where="the return value")
    except BaseException as error:
        object.__setattr__(task_result, "status", TaskResultStatus.FAILED)
        object.__setattr__(task_result, "finished_at", timezone.now())
        object.__setattr__(
            task_result,
            "errors",
            [
                TaskError(
                    exception_class_path=f"{type(error).__module__}.{type(error).__qualname__}",
                    traceback="".join(traceback.format_exception(error)),
                )
            ],
        )
        task_finished.send(sender=backend_class, task_result=task_result)
        raise
    object.__setattr__(task_result, "status", TaskResultStatus.SUCCESSFUL)
    object.__setattr__(task_result, "finished_at", timezone.now())
    object.__setattr__(task_result, "_return_value", value)
    task_finished.send(sender=backend_class, task_result=task_result)
    return value
