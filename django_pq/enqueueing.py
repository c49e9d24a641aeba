"""Putting work on the queue: enqueue, enqueue_many, upsert, cancel, retry.

Each call is validated here (a bad value is refused with :class:`TaskRefused` before any
SQL runs), then runs one statement of :mod:`django_pq.store.tasks` on the connection of
``PQ_DATABASE``, so it joins the caller's ``transaction.atomic()`` block (or autocommits
outside one), and its NOTIFY is part of that statement: listeners hear of a task only when
the transaction that wrote it commits, and a rollback leaves neither row nor notification.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from django_pq.codec import encode_payload
from django_pq.conf import pq_settings
from django_pq.declared_tasks import DECLARABLE_OPTIONS, declared_defaults
from django_pq.exceptions import DuplicateClientId, TaskRefused
from django_pq.flow_limits import InvalidLimit, check_key
from django_pq.models import Priority, Task
from django_pq.retry_policy import Retry
from django_pq.store import tasks as store
from django_pq.task_paths import task_path
from django_pq.timing import EARLIEST_MOMENT, LATEST_MOMENT, MAX_INTEGER

__all__ = ["PreparedTask", "cancel", "enqueue", "enqueue_many", "prepare", "retry", "upsert"]

#: Keyword arguments that ``enqueue``, ``prepare`` and ``upsert`` keep for themselves; every
#: other keyword argument goes to the task function.
RESERVED_OPTIONS = ("run_at", "client_id", "after", "run_anyway", *DECLARABLE_OPTIONS)


@dataclass(frozen=True)
class PreparedTask:
    """A validated, encoded task call, ready to be written by ``enqueue_many``."""

    name: str
    payload: dict[str, Any]
    queue: str
    priority: int
    run_at: datetime | None
    delay: timedelta | None
    client_id: str | None
    max_attempts: int
    max_runtime: float | None
    soft_runtime: float | None = None
    retry_policy: dict[str, Any] | None = None
    keep_result: float | None = None
    limit_key: str | None = None
    fair_key: str | None = None
    #: The existing tasks it waits for (``after=``), by id; see :mod:`django_pq.dependencies`.
    after: tuple[int, ...] = ()
    run_if: str | None = None  # None: only if they all completed; "ended": run_anyway
    # Set by the call that writes it (chains, batches), not by prepare():
    status: str = "pending"
    has_dependents: bool = False
    takes_result: bool = False
    batch_id: int | None = None


def _check_priority(priority: Any) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 100:
        raise TaskRefused(
            f"priority must be an integer from 0 (Priority.BATCH) to 100 (Priority.CRITICAL); "
            f"got {priority!r}. Use a Priority level such as Priority.HIGH."
        )
    return int(priority)


def check_text(option: str, value: Any, max_length: int) -> str:
    """``value`` if it is a non-empty string Postgres can store in a ``max_length`` column."""
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise TaskRefused(
            f"{option} must be a non-empty string of at most {max_length} characters; "
            f"got {value!r}."
        )
    check_no_nul(option, value)
    return value


def check_no_nul(option: str, value: str) -> None:
    """Postgres text cannot hold NUL: refuse it here rather than fail the statement."""
    if "\x00" in value:
        raise TaskRefused(
            f"{option} contains a NUL character ('\\x00'), which PostgreSQL text cannot "
            f"store; got {value!r}. Remove it."
        )


def check_count(option: str, value: Any, meaning: str) -> int:
    """An integer from 1 to MAX_INTEGER (the column is a Postgres ``integer``)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INTEGER:
        raise TaskRefused(
            f"{option} must be an integer >= 1 and <= {MAX_INTEGER} ({meaning}); got {value!r}."
        )
    return value


def check_max_attempts(max_attempts: Any) -> int:
    """The runs a task may have: ``max_attempts``, or ``PQ_MAX_ATTEMPTS`` for None."""
    if max_attempts is None:
        return int(pq_settings.MAX_ATTEMPTS)
    return check_count("max_attempts", max_attempts, "1 runs the task at most once")


def check_moment(option: str, moment: datetime | None, given: Any) -> None:
    """Refuse a moment outside EARLIEST_MOMENT..LATEST_MOMENT (``None``: it overflowed),
    the range the ``*_finite`` check constraints of every timestamp column enforce."""
    try:
        within = moment is not None and EARLIEST_MOMENT <= moment <= LATEST_MOMENT
    except OverflowError:  # comparing converts to UTC, which may leave datetime's range
        within = False
    if not within:
        raise TaskRefused(
            f"{option} must fall between {EARLIEST_MOMENT:%Y-%m-%d} and "
            f"{LATEST_MOMENT:%Y-%m-%d} (UTC), the moments both PostgreSQL and Python can "
            f"hold; got {given!r}. Use a nearer datetime or a shorter delay."
        )


def check_max_runtime(max_runtime: Any, option: str = "max_runtime") -> float | None:
    """Seconds a run may last (a positive finite number or a timedelta), or None."""
    if max_runtime is None:
        return None
    seconds = max_runtime.total_seconds() if isinstance(max_runtime, timedelta) else max_runtime
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds <= 0
    ):
        raise TaskRefused(
            f"{option} must be a positive number of seconds or a timedelta; "
            f"got {max_runtime!r}. Leave it as None for no limit of the task's own."
        )
    return float(seconds)


def _check_soft_runtime(soft_runtime: Any, max_runtime: float | None) -> float | None:
    """Seconds before the task is told to stop (pq.TimeLimitExceeded): below max_runtime."""
    soft = check_max_runtime(soft_runtime, "soft_runtime")
    if soft is not None and max_runtime is not None and soft >= max_runtime:
        raise TaskRefused(
            f"soft_runtime ({soft:g} s) must be below max_runtime ({max_runtime:g} s): the "
            "soft limit warns the task, and the hard one then stops it."
        )
    return soft


def _check_run_at(run_at: Any) -> tuple[datetime | None, timedelta | None]:
    if run_at is None:
        return None, None
    if isinstance(run_at, timedelta):
        try:
            moment: datetime | None = timezone.now() + run_at
        except OverflowError:
            moment = None
        # By this clock, not the database clock (they differ by seconds, the range by millennia).
        check_moment("run_at", moment, run_at)
        return None, run_at
    if not isinstance(run_at, datetime):
        raise TaskRefused(
            f"run_at must be a datetime, a timedelta (a delay from now) or None; got {run_at!r}."
        )
    if settings.USE_TZ and timezone.is_naive(run_at):
        raise TaskRefused(
            f"run_at={run_at!r} is a naive datetime while USE_TZ = True, so its moment is "
            "ambiguous. Make it aware (django.utils.timezone.make_aware(run_at)) or pass a "
            "timedelta delay."
        )
    try:
        aware: datetime | None = (
            run_at if timezone.is_aware(run_at) else timezone.make_aware(run_at)
        )
    except OverflowError:
        aware = None
    check_moment("run_at", aware, run_at)
    if not settings.USE_TZ and timezone.is_aware(run_at):
        run_at = timezone.make_naive(run_at)
    return run_at, None


def _check_keep_result(keep_result: Any) -> float | None:
    """None (the global retention), False or 0 (keep no result), or seconds to keep the
    finished row at least, even past ``PQ_RETENTION``."""
    if keep_result is None:
        return None
    if keep_result is False:
        return 0.0
    seconds = keep_result.total_seconds() if isinstance(keep_result, timedelta) else keep_result
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise TaskRefused(
            "keep_result must be None (PQ_RETENTION applies), False or 0 (keep no result), "
            f"or seconds (or a timedelta) to keep the finished task; got {keep_result!r}."
        )
    return float(seconds)


def _check_retry(retry: Any) -> Retry | None:
    if retry is not None and not isinstance(retry, Retry):
        raise TaskRefused(
            f"retry must be a pq.Retry policy (e.g. pq.Retry(5, on={{'exception'}})) or None; "
            f"got {retry!r}."
        )
    return retry


def _check_key(option: str, key: Any) -> str | None:
    try:
        return check_key(option, key)
    except InvalidLimit as error:
        raise TaskRefused(str(error)) from None


def _derived_key(
    option: str, func: Callable[..., Any], key: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str | None:
    """The key ``@pq.task(limit_key=callable)`` derives from the call's arguments."""
    if not callable(key):
        return _check_key(option, key)
    try:
        derived = key(*args, **kwargs)
    except Exception as error:
        raise TaskRefused(
            f"{task_path(func)}: its declared {option} function raised {error!r} for this "
            "call; make it accept the task's arguments and return a string or None."
        ) from error
    return _check_key(f"{task_path(func)}: the {option} its declared function returned", derived)


def check_options(options: dict[str, Any], *, declared: bool = False) -> None:
    """Refuse bad values among enqueue options (``@pq.task`` checks its defaults here,
    ``declared``: a flow key may then be a function of the call's arguments)."""
    if "priority" in options:
        _check_priority(options["priority"])
    if options.get("queue") is not None:
        check_text("queue", options["queue"], 100)
    if options.get("max_attempts") is not None:
        check_max_attempts(options["max_attempts"])
    _check_soft_runtime(options.get("soft_runtime"), check_max_runtime(options.get("max_runtime")))
    _check_keep_result(options.get("keep_result"))
    for option in ("limit_key", "fair_key"):
        # A declared key may be a function of the call's arguments; a given one is a key.
        if not (declared and callable(options.get(option))):
            _check_key(option, options.get(option))
    retry = _check_retry(options.get("retry"))
    attempts = options.get("max_attempts")
    if retry is not None and attempts is not None and attempts != retry.max_attempts:
        raise TaskRefused(
            f"max_attempts={attempts!r} contradicts retry={retry!r}, whose first argument "
            "is the runs allowed; give one of them."
        )


def _max_attempts(declared: dict[str, Any], given: dict[str, Any]) -> int:
    """The runs allowed: the call's max_attempts or retry policy, then the declared ones
    (a call's ``retry=None`` drops the declared policy, and its attempts with it)."""
    if given.get("max_attempts") is not None:
        return check_max_attempts(given["max_attempts"])
    if given.get("retry") is not None:
        return int(given["retry"].max_attempts)
    if declared.get("max_attempts") is not None:
        return check_max_attempts(declared["max_attempts"])
    if "retry" not in given and declared.get("retry") is not None:
        return int(declared["retry"].max_attempts)
    return check_max_attempts(None)


def _check_after(after: Any) -> tuple[int, ...]:
    """``after=``: tasks or their ids, each once, in the order given."""
    if after is None:
        return ()
    if isinstance(after, Task | int) and not isinstance(after, bool):
        after = [after]
    if isinstance(after, str | bytes) or not isinstance(after, Iterable):
        raise TaskRefused(f"after={after!r} must be a list of tasks or task ids.")
    ids: list[int] = []
    for item in after:
        if isinstance(item, Task) and item.pk is not None:
            task_id = item.pk
        elif isinstance(item, int) and not isinstance(item, bool) and 0 < item <= 2**63 - 1:
            task_id = item
        else:
            raise TaskRefused(
                f"after= holds {item!r}: give saved tasks (what enqueue() returned) or their ids."
            )
        if task_id not in ids:
            ids.append(task_id)
    return tuple(ids)


def prepare(func: Callable[..., Any], *args: Any, **kwargs: Any) -> PreparedTask:
    """Validate and encode one task call without writing it; see :func:`enqueue` for options.

    Use it to build the list given to :func:`enqueue_many`.
    """
    given = {name: kwargs.pop(name) for name in RESERVED_OPTIONS if name in kwargs}
    check_options(given)
    declared = declared_defaults(func)
    options = {**declared, **given}
    run_at, delay = _check_run_at(options.get("run_at"))
    max_runtime = check_max_runtime(options.get("max_runtime"))
    client_id = options.get("client_id")
    queue = options.get("queue")
    name = task_path(func)
    check_no_nul("the task's name", name)
    return PreparedTask(
        name=name,
        payload=encode_payload(args, kwargs),
        queue=check_text("queue", pq_settings.DEFAULT_QUEUE if queue is None else queue, 100),
        priority=_check_priority(options.get("priority", Priority.NORMAL)),
        run_at=run_at,
        delay=delay,
        client_id=None if client_id is None else check_text("client_id", client_id, 255),
        max_attempts=_max_attempts(declared, given),
        max_runtime=max_runtime,
        soft_runtime=_check_soft_runtime(options.get("soft_runtime"), max_runtime),
        retry_policy=None if options.get("retry") is None else options["retry"].as_json(),
        keep_result=_check_keep_result(options.get("keep_result")),
        limit_key=_derived_key("limit_key", func, options.get("limit_key"), args, kwargs),
        fair_key=_derived_key("fair_key", func, options.get("fair_key"), args, kwargs),
        after=_check_after(given.get("after")),
        run_if="ended" if _check_run_anyway(given.get("run_anyway", False)) else None,
    )


def _check_run_anyway(run_anyway: Any) -> bool:
    if not isinstance(run_anyway, bool):
        raise TaskRefused(f"run_anyway={run_anyway!r} must be True or False.")
    return run_anyway


def _row_params(prepared: PreparedTask, fair_turn: int = 1) -> list[Any]:
    """One task's values in ``ROW_COLUMNS`` order, the payload as JSON text; ``fair_turn``:
    its place among the batch's tasks of its fair key and priority."""
    params = [getattr(prepared, column) for column in store.ROW_COLUMNS[:-1]] + [fair_turn]
    params[store.ROW_COLUMNS.index("payload")] = json.dumps(prepared.payload)
    if prepared.retry_policy is not None:
        params[store.ROW_COLUMNS.index("retry_policy")] = json.dumps(prepared.retry_policy)
    return params


def _array_params(prepared: list[PreparedTask]) -> list[Any]:
    """The same values as one array per column, for ``INSERT_MANY``."""
    turns: dict[tuple[str, int], int] = {}
    rows = []
    for task in prepared:
        turn = 1
        if task.fair_key is not None:
            place = (task.fair_key, task.priority)
            turn = turns[place] = turns.get(place, 0) + 1
        rows.append(_row_params(task, turn))
    return [list(column) for column in zip(*rows, strict=True)]


def enqueue_many(prepared: Iterable[PreparedTask], *, skip_duplicates: bool = False) -> list[Task]:
    """Write many prepared tasks in one statement; returns the new tasks in input order.

    A ``client_id`` that already exists raises :class:`DuplicateClientId` and writes none of
    them, unless ``skip_duplicates`` is true, in which case those are left out of the result.
    Prepared tasks that wait for others (``after=``) are written with their dependencies.
    """
    batch = list(prepared)
    if not batch:
        return []
    if any(task.after for task in batch):
        if skip_duplicates:
            raise TaskRefused(
                "skip_duplicates=True cannot be combined with after=: a task left out "
                "would leave what waits for it waiting; enqueue those separately."
            )
        from django_pq.dependencies import write_structure

        return write_structure(batch, [])
    alias = pq_settings.DATABASE
    # A savepoint, so a refused batch leaves none of its rows in the caller's transaction.
    with transaction.atomic(using=alias):
        written = store.write_rows(store.INSERT_MANY, _array_params(batch))
        if len(written) < len(batch) and not skip_duplicates:
            stored = {task.client_id for task in written}
            missing = [p.client_id for p in batch if p.client_id not in stored]
            raise DuplicateClientId([client_id for client_id in missing if client_id])
    # Ids are drawn in input order (ORDER BY r.n); RETURNING alone promises no order.
    return sorted(written, key=lambda task: task.pk)


def enqueue(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Task:
    """Enqueue ``func(*args, **kwargs)`` as a task and return its :class:`~django_pq.models.Task`.

    Options (taken out of ``kwargs``; every other keyword goes to the task):

    - ``run_at``: an aware datetime, or a timedelta delay; default: now by the database clock.
    - ``priority``: 0..100, default ``Priority.NORMAL``; higher runs first.
    - ``queue``: default ``PQ_DEFAULT_QUEUE``.
    - ``client_id``: your own unique id; a duplicate raises :class:`DuplicateClientId`.
    - ``max_attempts``: runs allowed (default ``PQ_MAX_ATTEMPTS``, 1: at most once).
    - ``max_runtime``: seconds (or a timedelta) before the worker stops the task.
    - ``soft_runtime``: seconds (or a timedelta), below ``max_runtime``, after which
      :class:`~django_pq.TimeLimitExceeded` is raised inside the task, so it can clean up.
    - ``keep_result``: seconds (or a timedelta) to keep the finished task, its result
      included, at least, even past ``PQ_RETENTION``; ``False`` or 0 keeps no result.
    - ``retry``: a :class:`~django_pq.Retry` policy: which ways of dying retry, how often,
      after what delay. Its first argument is the runs allowed (``max_attempts``).
    - ``limit_key``: the flow key ``PQ_LIMITS`` applies to (``"stripe"``, ``"customer:42"``):
      concurrency, rate and order across all workers. A key no limit names runs unlimited.
    - ``fair_key``: who the task is for (a tenant): tasks of different fair keys are
      claimed round-robin within a priority, so one key's backlog does not delay another's.
    - ``after``: tasks (or ids) to wait for: the task is ``blocked`` until they have all
      ended, then runs if they all completed; if one fails for good or is cancelled it is
      cancelled (``dependency_failed``), unless ``run_anyway=True``.

    A function declared with ``@pq.task(...)`` brings its defaults for these; an option
    given here wins.

    Inside ``transaction.atomic()`` the task exists only if that transaction commits.
    """
    prepared = prepare(func, *args, **kwargs)
    if prepared.after:
        from django_pq.dependencies import write_structure

        return write_structure([prepared], [])[0]
    written = store.write_rows(store.INSERT_ONE, _row_params(prepared))
    if not written:
        # Nothing failed inside the database, so the caller's transaction is still usable.
        raise DuplicateClientId([prepared.client_id or ""])
    return written[0]


def upsert(func: Callable[..., Any], *args: Any, client_id: str, **kwargs: Any) -> Task:
    """Enqueue or replace the task with ``client_id``, so only its latest version runs.

    A pending or finished task is overwritten and reset to pending (attempts back to 0). A
    running task keeps running and the new version is parked on it; the worker applies it
    when the run ends, and a later upsert replaces the parked version. Race-free: concurrent
    upserts of one ``client_id`` serialize on the row.
    """
    prepared = prepare(func, *args, client_id=client_id, **kwargs)
    if prepared.after or prepared.run_if:
        raise TaskRefused(
            "upsert() takes no after= or run_anyway=: a replaced version would change what "
            "waits for what; use enqueue(..., after=...) instead."
        )
    return store.write_rows(store.UPSERT, _row_params(prepared))[0]


def _task_id(task: Task | int) -> int:
    return task.pk if isinstance(task, Task) else int(task)


def _change_one(sql: str, task: Task | int) -> bool:
    task_id = _task_id(task)
    changed = bool(store.change(sql, [task_id]))
    if not changed and not Task.objects.using(pq_settings.DATABASE).filter(pk=task_id).exists():
        raise Task.DoesNotExist(f"There is no task with id {task_id}.")
    return changed


def cancel(task: Task | int) -> bool:
    """Cancel a task. Returns whether it was cancelled (False: it had already finished).

    A pending or blocked task becomes ``cancelled`` at once. A running task is marked, and
    its worker stops it and records ``cancelled``; a version parked on it by ``upsert`` is
    dropped.
    """
    return _change_one(store.CANCEL, task)


def retry(task: Task | int) -> bool:
    """Put a failed or cancelled task back to pending, to run now. Returns whether it did.

    Attempts are kept, so a retried task that had used up ``max_attempts`` gets one more run.
    The last error stays visible until the new run ends.
    """
    return _change_one(store.RETRY, task)


def cancel_many(task_ids: list[int]) -> list[tuple[int, str]]:
    """:func:`cancel` for many tasks in one statement (the admin's bulk action).

    Returns (id, status) for each task it changed: ``cancelled`` for one that was pending,
    ``running`` for one whose worker was asked to stop it. Unknown or finished ids are left.
    """
    return store.change(store.CANCEL, task_ids)


def retry_many(task_ids: list[int]) -> list[int]:
    """:func:`retry` for many tasks in one statement; returns the ids it put back to pending."""
    return [task_id for task_id, _ in store.change(store.RETRY, task_ids)]
