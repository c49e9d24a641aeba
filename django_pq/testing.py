"""Helpers for your own tests: see what your code enqueued, and run it without a worker.

::

    from django_pq.testing import capture_tasks, run_pending_tasks

    def test_order_sends_receipt(db):
        with capture_tasks() as captured:
            order = place_order(product, 1, "a@example.com")
        captured.assert_enqueued(send_receipt, order_id=order.pk, priority=Priority.HIGH)
        [outcome] = run_pending_tasks()
        assert outcome.status == "completed"

Captures read the ``pq_tasks`` rows created while the capture ran, so every way of
enqueueing (``enqueue``, ``enqueue_many``, ``upsert`` of a new ``client_id``,
``PQBackend``, schedules) is seen, and an enqueue rolled back with its transaction is
not. ``run_pending_tasks`` claims and runs tasks the way ``pq_worker`` does (same hooks,
same outcome rules, retries included), in this process (``isolation="inline"``, inside
the test's transaction) or in a forked child (``isolation="fork"``, which needs committed
data: ``TransactionTestCase`` or pytest's ``transactional_db``).

With pytest, ``pytest_plugins = ["django_pq.testing"]`` in a ``conftest.py`` gives the
``pq_capture`` fixture. ``PQTestCaseMixin`` offers the same to ``TestCase`` classes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from django.db import DatabaseError, connections, transaction

from django_pq.conf import pq_settings
from django_pq.exceptions import PQError
from django_pq.store import tasks as store

if TYPE_CHECKING:
    from django_pq.models import Task
    from django_pq.store.worker import Claimed, Outcome

__all__ = [
    "CapturedTasks",
    "EnqueuedTask",
    "PQTestCaseMixin",
    "TaskOutcome",
    "capture_tasks",
    "pq_capture",
    "run_pending_tasks",
]

Isolation = Literal["inline", "fork"]

#: The enqueue options an assertion can check, as ``enqueue()`` names them.
OPTION_NAMES = ("run_at", "priority", "queue", "client_id", "max_attempts", "max_runtime")


@dataclass(frozen=True)
class EnqueuedTask:
    """One enqueued task as a test sees it: the function's path, its call, its options."""

    id: int
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    queue: str
    priority: int
    run_at: datetime
    client_id: str | None
    max_attempts: int
    max_runtime: float | None
    status: str

    @classmethod
    def from_row(cls, row: Task) -> EnqueuedTask:
        args, kwargs = row.decoded_arguments()
        return cls(
            id=row.pk,
            name=row.name,
            args=args,
            kwargs=kwargs,
            queue=row.queue,
            priority=row.priority,
            run_at=row.run_at,
            client_id=row.client_id,
            max_attempts=row.max_attempts,
            max_runtime=row.max_runtime,
            status=row.status,
        )

    def describe(self) -> str:
        call = [repr(value) for value in self.args]
        call += [f"{name}={value!r}" for name, value in self.kwargs.items()]
        return (
            f"#{self.id} {self.name}({', '.join(call)}) queue={self.queue!r} "
            f"priority={self.priority} client_id={self.client_id!r} status={self.status}"
        )


def _name_of(func: Callable[..., Any] | str) -> str:
    from django_pq.task_paths import task_path

    return func if isinstance(func, str) else task_path(func)


class CapturedTasks:
    """The tasks created on ``PQ_DATABASE`` since this capture began (until it ended).

    A task is captured when its row was created in that span: its id is newer than the
    newest one at the start (and, once :meth:`end` is called, not newer than the newest
    one then). So an ``upsert`` that replaces a task created before the capture began is
    not captured: it keeps that task's row and id. Read live: ``tasks`` queries again each
    time, so a capture read after its block still sees what the block enqueued, with its
    current status.
    """

    def __init__(self, using: str | None = None) -> None:
        self.using = using or pq_settings.DATABASE
        self.after_id = store.newest_id(self.using)
        self.until_id: int | None = None

    def end(self) -> None:
        """Stop capturing: tasks created from now on are not part of this capture."""
        if self.until_id is None:
            self.until_id = store.newest_id(self.using)

    @property
    def tasks(self) -> list[EnqueuedTask]:
        """Captured tasks, oldest first."""
        from django_pq.models import Task

        rows = Task.objects.using(self.using).filter(pk__gt=self.after_id)
        if self.until_id is not None:
            rows = rows.filter(pk__lte=self.until_id)
        return [EnqueuedTask.from_row(row) for row in rows.order_by("pk")]

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[EnqueuedTask]:
        return iter(self.tasks)

    def for_function(self, func: Callable[..., Any] | str) -> list[EnqueuedTask]:
        """Captured tasks of one function (the function, a django.tasks Task, or its path)."""
        name = _name_of(func)
        return [task for task in self.tasks if task.name == name]

    def matching(
        self, func: Callable[..., Any] | str, *args: Any, **kwargs: Any
    ) -> list[EnqueuedTask]:
        """Captured tasks of ``func`` called as ``enqueue(func, *args, **kwargs)`` would be.

        Keywords named like enqueue options (``priority``, ``queue``, ``run_at``,
        ``client_id``, ``max_attempts``, ``max_runtime``) are compared with the task's
        options; the rest with its arguments. Without positional or task keyword
        arguments, any arguments match. ``unittest.mock.ANY`` matches any one value.
        """
        options = {name: kwargs.pop(name) for name in OPTION_NAMES if name in kwargs}
        compare_call = bool(args or kwargs)
        found = []
        for task in self.for_function(func):
            if compare_call and (task.args != args or task.kwargs != kwargs):
                continue
            if all(getattr(task, name) == value for name, value in options.items()):
                found.append(task)
        return found

    def assert_enqueued(
        self, func: Callable[..., Any] | str, *args: Any, count: int | None = None, **kwargs: Any
    ) -> EnqueuedTask:
        """Fail unless ``func`` was enqueued like this (``count`` times, if given).

        Returns the (last) matching task. The failure lists what was enqueued instead.
        """
        found = self.matching(func, *args, **kwargs)
        expected = "at least once" if count is None else f"{count} time(s)"
        if not found or (count is not None and len(found) != count):
            raise AssertionError(
                f"Expected {_name_of(func)} enqueued {expected} with "
                f"{_describe_call(args, kwargs)}; found {len(found)} matching. "
                f"Enqueued: {self._listing()}"
            )
        return found[-1]

    def assert_not_enqueued(
        self, func: Callable[..., Any] | str, *args: Any, **kwargs: Any
    ) -> None:
        """Fail if ``func`` was enqueued like this (any arguments, when none are given)."""
        found = self.matching(func, *args, **kwargs)
        if found:
            raise AssertionError(
                f"Expected no {_name_of(func)} enqueued with {_describe_call(args, kwargs)}; "
                f"found: {'; '.join(task.describe() for task in found)}"
            )

    def assert_nothing_enqueued(self) -> None:
        """Fail if any task was enqueued since the capture began."""
        if self.tasks:
            raise AssertionError(f"Expected no task enqueued; found: {self._listing()}")

    def run(self, **options: Any) -> list[TaskOutcome]:
        """Run the pending tasks now; see :func:`run_pending_tasks` for the options."""
        return run_pending_tasks(using=self.using, **options)

    def _listing(self) -> str:
        return "; ".join(task.describe() for task in self.tasks) or "nothing"


def _describe_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    if not args and not kwargs:
        return "any arguments"
    parts = [repr(value) for value in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"({', '.join(parts)})"


@contextlib.contextmanager
def capture_tasks(using: str | None = None) -> Iterator[CapturedTasks]:
    """Capture the tasks created inside the ``with`` block, by any way of enqueueing.

    After the block the capture still reads those tasks (with their current status), and
    no task created later. An enqueue rolled back with its transaction is not captured;
    an ``upsert`` that replaces a task created before the block is not either (it keeps
    that task's row: look it up by ``client_id``). See :class:`CapturedTasks`.
    """
    captured = CapturedTasks(using)
    try:
        yield captured
    except BaseException:
        # The block's error is the one to see: if it also broke the transaction, ending
        # the capture cannot read the newest id, and must not raise "transaction aborted"
        # in its place (the capture stays open then).
        with contextlib.suppress(DatabaseError):
            captured.end()
        raise
    captured.end()


@dataclass(frozen=True)
class TaskOutcome:
    """How one run ended, as the worker would have recorded it."""

    id: int
    name: str
    attempt: int
    status: str  # completed | failed | cancelled | pending (a retry, or a parked upsert)
    error_code: str
    error: str
    result: Any = field(default=None)


CHECK_DEPENDENCIES_NOW = (
    "SET CONSTRAINTS pq_dependencies_committed IMMEDIATE; "
    "SET CONSTRAINTS pq_dependencies_committed DEFERRED"
)


def run_pending_tasks(
    *,
    isolation: Isolation = "inline",
    queues: Sequence[str] = (),
    include_scheduled: bool = False,
    max_tasks: int = 1000,
    using: str | None = None,
) -> list[TaskOutcome]:
    """Run pending tasks in this process until none is ready; return how each run ended.

    - ``isolation="inline"`` runs each task in this process, inside a savepoint of the
      test's transaction, so it sees the test's uncommitted data. ``"fork"`` runs each in a
      forked child exactly as ``pq_worker`` does (timeouts and crashes included); the child
      has its own connection, so the data must be committed (``TransactionTestCase``).
    - ``queues``: only these queues (default: all).
    - ``include_scheduled``: also run tasks whose ``run_at`` is in the future.
    - ``max_tasks``: a bound on runs, so a task that enqueues itself cannot loop forever.

    Retries without a retry policy run at once (no backoff delay); a ``pq.Retry`` policy's
    delay (and ``pq.RetryLater``'s) puts the next run ahead, so it runs here only with
    ``include_scheduled=True``. Raises :class:`PQError` when ``max_tasks``
    runs did not empty the queue.
    """
    from django_pq.models import Task
    from django_pq.store.worker import (
        FINISH_STATEMENT,
        FLOW_ROUNDS,
        ClaimFilter,
        claim_params,
        claim_statement,
        claimed_rows,
        finish_params,
    )

    alias = using or pq_settings.DATABASE
    connection = connections[alias]
    if isolation == "fork" and connection.in_atomic_block:
        raise PQError(
            "run_pending_tasks(isolation='fork') runs each task in a child process with its "
            "own database connection, which cannot see this test's uncommitted transaction. "
            "Use TransactionTestCase (pytest: the transactional_db fixture), or "
            "isolation='inline'."
        )
    if connection.in_atomic_block:
        # A dependency written with after= is checked when its transaction commits, and a
        # test's transaction never does: check what is written so far now.
        with connection.cursor() as cursor:
            cursor.execute(CHECK_DEPENDENCIES_NOW)
    worker_id = str(uuid.uuid4())
    outcomes: list[TaskOutcome] = []
    # The worker's own claim, one task at a time.
    scope = ClaimFilter(queues=list(queues))
    claim = claim_statement(scope, include_scheduled=include_scheduled)
    params = claim_params(scope, worker_id, limit=1)
    held_rounds = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(claim, params)
            rows, hints = claimed_rows(cursor.fetchall())
        if not rows and hints.held_back and held_rounds < FLOW_ROUNDS:
            held_rounds += 1  # as the worker does: flow limits held candidates back
            continue
        if not rows:
            return outcomes
        held_rounds = 0
        row = rows[0]
        if len(outcomes) >= max_tasks:
            raise PQError(
                f"run_pending_tasks ran {max_tasks} tasks and more are still pending (a task "
                "that enqueues itself?). Raise max_tasks if that many are expected."
            )
        # Django's cursor hands jsonb over as text; the worker's own connection parses it.
        payload = json.loads(row.payload) if isinstance(row.payload, str) else row.payload
        claimed = dataclasses.replace(row, payload=payload)
        run = _run_inline(claimed, alias) if isolation == "inline" else _run_forked(claimed)
        with connection.cursor() as cursor:
            cursor.execute(FINISH_STATEMENT, finish_params([run], pq_settings.NOTIFY_CHANNEL))
        task = Task.objects.using(alias).get(pk=claimed.id)
        outcomes.append(
            TaskOutcome(
                id=task.pk,
                name=claimed.name,
                attempt=claimed.attempts,
                status=task.status,
                error_code=task.error_code,
                error=task.error,
                result=task.decoded_result(),
            )
        )


class _UndoTask(Exception):
    """Leaves the task's savepoint by rolling it back."""


def _transaction_failed(connection: Any) -> bool:
    from psycopg.pq import TransactionStatus

    raw = connection.connection
    return raw is not None and raw.info.transaction_status == TransactionStatus.INERROR


def _run_inline(claimed: Claimed, alias: str) -> Outcome:
    from django_pq.worker.child import execute
    from django_pq.worker.children import RunningChild, judge
    from django_pq.worker.progress import write_on_connection

    connection = connections[alias]
    # Progress goes through the test's connection: a second one would wait on its locks.
    writer = write_on_connection(alias, claimed.id, claimed.run_token)
    if not connection.in_atomic_block:
        report = execute(claimed, pq_settings.MAX_MEMORY, writer)
    else:
        # Inside the test's transaction, the task runs in a savepoint: a task whose own
        # query failed is undone, as its own connection's failure would be in a worker,
        # and leaves the test's transaction usable.
        try:
            with transaction.atomic(using=alias):
                report = execute(claimed, pq_settings.MAX_MEMORY, writer)
                if connection.needs_rollback or _transaction_failed(connection):
                    raise _UndoTask
        except _UndoTask:
            pass
    child = RunningChild(
        task=claimed,
        pid=0,
        report_fd=-1,
        started=0.0,
        deadline=None,
        report=bytearray(json.dumps(report).encode()),
    )
    return judge(child, 0, None, pq_settings.ERROR_MAX_LENGTH, retry_delay=0.0)


def _run_forked(claimed: Claimed) -> Outcome:
    from django_pq.worker.child import LeaseClock
    from django_pq.worker.children import fork_child, judge

    max_runtime = claimed.max_runtime or pq_settings.MAX_RUNTIME
    child = fork_child(claimed, LeaseClock(), max_runtime, pq_settings.MAX_MEMORY)
    # The pipe closes when the child exits (or is killed): until then, enforce the deadline.
    while not child.pipe_closed:
        now = time.monotonic()
        if child.deadline is not None and now >= child.deadline:
            child.stop(
                "timeout",
                f"The task ran past its max_runtime of {max_runtime:g}s.",
                pq_settings.KILL_GRACE,
            )
        child.escalate(now)
        select.select([child.report_fd], [], [], 0.05)
        child.read_report()
    _, status, usage = os.wait4(child.pid, 0)
    return judge(child, status, usage, pq_settings.ERROR_MAX_LENGTH, retry_delay=0.0)


class PQTestCaseMixin:
    """For ``django.test.TestCase`` classes: ``captureEnqueuedTasks`` and friends.

    ::

        class OrderTests(PQTestCaseMixin, TestCase):
            def test_receipt(self):
                with self.captureEnqueuedTasks() as captured:
                    place_order(...)
                captured.assert_enqueued(send_receipt, order_id=...)
                self.runPendingTasks()
    """

    def captureEnqueuedTasks(
        self, using: str | None = None
    ) -> contextlib.AbstractContextManager[CapturedTasks]:
        """Capture the tasks enqueued inside the ``with`` block."""
        return capture_tasks(using)

    def runPendingTasks(self, **options: Any) -> list[TaskOutcome]:
        """Run the pending tasks now; see :func:`run_pending_tasks`."""
        return run_pending_tasks(**options)

    def assertTaskEnqueued(
        self, captured: CapturedTasks, func: Callable[..., Any] | str, *args: Any, **kwargs: Any
    ) -> EnqueuedTask:
        """``captured.assert_enqueued(...)``, in ``TestCase`` style."""
        return captured.assert_enqueued(func, *args, **kwargs)


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional
    pass
else:

    @pytest.fixture
    def pq_capture(request: pytest.FixtureRequest) -> CapturedTasks:
        """A :class:`CapturedTasks` begun at the start of the test.

        Uses the test's own database fixture when it asks for one (``db`` or
        ``transactional_db``), and ``db`` otherwise.
        """
        asks_for_db = {"db", "transactional_db"} & set(request.fixturenames)
        if not asks_for_db and request.node.get_closest_marker("django_db") is None:
            request.getfixturevalue("db")
        return CapturedTasks()
