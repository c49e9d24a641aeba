"""Work that depends on work: ``after=``, chains and batches with callbacks.

Everything one call builds (tasks, who waits for whom, the batch and its callbacks) is
written inside one savepoint on the connection of ``PQ_DATABASE``: inside the caller's
``transaction.atomic()`` it commits or rolls back with the caller's own rows. A task that
waits is ``blocked`` (never claimed) until the transaction that ends its last dependency
releases it; see docs/explanation/dependencies.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from django_pq.conf import pq_settings
from django_pq.enqueueing import PreparedTask, _array_params, cancel_many, retry_many
from django_pq.exceptions import DuplicateClientId, TaskRefused
from django_pq.models import FINISHED_STATUSES, BatchKind, RunIf, Status, Task
from django_pq.store import dependencies as store
from django_pq.store import tasks as task_store

__all__ = ["BatchHandle", "batch", "cancel_batch", "chain", "retry_batch"]

_ENDED_BADLY = (Status.FAILED, Status.CANCELLED)


@dataclass
class BatchHandle:
    """A batch or chain: its ``id``, its member ``tasks`` and its callbacks.

    From :func:`batch`, ``tasks`` are the members just written; from
    ``pq.current_task().batch`` (inside a member or a callback), they are read the first
    time they are asked for (a member that only wants ``counts`` reads no 10,000 rows).
    """

    id: int
    written: list[Task] | None = field(default=None, repr=False)
    on_success: Task | None = None
    on_failure: Task | None = None
    on_finish: Task | None = None

    @property
    def tasks(self) -> list[Task]:
        """The members: those just written, or else as they are now."""
        if self.written is None:
            self.written = self.members()
        return self.written

    @property
    def counts(self) -> dict[str, int]:
        """The members (callbacks left out) by status, as the database has them now."""
        rows = store.fetch(store.BATCH_COUNTS, [self.id])
        return {str(status): int(count) for status, count in rows}

    def members(self) -> list[Task]:
        """The members as they are now, in the order they were written."""
        ids = [row[0] for row in store.fetch(store.MEMBERS_IN, [self.id, list(Status.values)])]
        found = Task.objects.using(pq_settings.DATABASE).in_bulk(ids)
        return [found[task_id] for task_id in ids if task_id in found]

    def results(self) -> dict[int, Any]:
        """The decoded results of the members that completed, by task id."""
        return {
            task.pk: task.decoded_result() for task in self.members() if task.status == "completed"
        }

    def cancel(self) -> list[tuple[int, str]]:
        """:func:`cancel_batch`."""
        return cancel_batch(self.id)

    def retry_failed(self) -> list[int]:
        """:func:`retry_batch`."""
        return retry_batch(self.id)


def _refuse_bad_dependencies(prepared: Sequence[PreparedTask]) -> dict[int, str]:
    """The status of every task given as ``after=``; refuse one that does not exist, or
    that already failed or was cancelled for a task that would then never run."""
    wanted = sorted({task_id for task in prepared for task_id in task.after})
    if not wanted:
        return {}
    statuses = {task_id: status for task_id, status in store.fetch(store.STATUSES, [wanted])}
    missing = [task_id for task_id in wanted if task_id not in statuses]
    if missing:
        raise TaskRefused(f"after= names tasks that do not exist: {missing}.")
    for task in prepared:
        for task_id in task.after:
            if statuses[task_id] in _ENDED_BADLY and task.run_if is None:
                raise TaskRefused(
                    f"{task.name} would wait for task {task_id}, which already "
                    f"{'failed' if statuses[task_id] == Status.FAILED else 'was cancelled'}: "
                    "it could never run. Retry that task first, or give run_anyway=True."
                )
    return statuses


def write_structure(
    prepared: Sequence[PreparedTask],
    links: Iterable[tuple[int, int]],
    *,
    batch_id: int | None = None,
) -> list[Task]:
    """Write ``prepared`` (in order) and who waits for whom: each task's ``after=`` (tasks
    that exist) and ``links``, (waiting, waited for) pairs of indexes into ``prepared``.

    Returns the written tasks in input order. One savepoint: a refusal writes nothing.
    """
    links = list(links)
    alias = pq_settings.DATABASE
    with transaction.atomic(using=alias):
        statuses = _refuse_bad_dependencies(prepared)
        waiting = {waiter for waiter, _ in links}
        waited_for = {dependency for _, dependency in links}
        rows = []
        for index, task in enumerate(prepared):
            open_after = any(statuses[t] not in FINISHED_STATUSES for t in task.after)
            rows.append(
                dataclasses.replace(
                    task,
                    status=Status.BLOCKED if index in waiting or open_after else Status.PENDING,
                    has_dependents=index in waited_for,
                    batch_id=batch_id if batch_id is not None else task.batch_id,
                )
            )
        written = task_store.write_rows(task_store.INSERT_MANY, _array_params(rows))
        if len(written) < len(rows):
            stored = {task.client_id for task in written}
            raise DuplicateClientId(
                [t.client_id for t in rows if t.client_id and t.client_id not in stored]
            )
        written.sort(key=lambda task: task.pk)
        ids = [task.pk for task in written]
        edges: list[tuple[int, int, bool, bool]] = []
        for index, task in enumerate(rows):
            for task_id in task.after:
                ended = statuses[task_id] in FINISHED_STATUSES
                # An ended one needs no check at commit: it cannot end again meanwhile.
                edges.append((ids[index], task_id, ended, ended))
        edges += [(ids[waiter], ids[dependency], False, True) for waiter, dependency in links]
        if edges:
            # In the order of what is waited for: the commit's check locks those rows one
            # by one, and two callers waiting for the same tasks then lock them in one order.
            edges.sort(key=lambda edge: (edge[1], edge[0]))
            columns = [list(column) for column in zip(*edges, strict=True)]
            store.fetch(store.ADD_DEPENDENCIES, columns)
    return written


def _check_prepared(what: str, value: Any) -> PreparedTask:
    if not isinstance(value, PreparedTask):
        raise TaskRefused(
            f"{what} is {value!r}: give a prepared call, pq.prepare(function, *args, ...)."
        )
    return value


def chain(*steps: PreparedTask, pass_result: bool = False) -> list[Task]:
    """Write ``steps`` (prepared calls) so that each runs after the previous one completed;
    returns the tasks, in order. With ``pass_result=True`` each step after the first gets
    the previous step's result as its first argument.

    A step that fails for good or is cancelled cancels the rest (``dependency_failed``).
    The first step may wait for existing tasks (``after=`` on its prepare()).
    """
    if not steps:
        raise TaskRefused("chain() needs at least one step: pq.prepare(function, ...).")
    checked = [_check_prepared(f"step {n}", step) for n, step in enumerate(steps, 1)]
    alias = pq_settings.DATABASE
    with transaction.atomic(using=alias):
        [(chain_id,)] = store.fetch(store.NEW_BATCH, [BatchKind.CHAIN])
        checked = [
            dataclasses.replace(step, takes_result=pass_result and n > 0)
            for n, step in enumerate(checked)
        ]
        return write_structure(
            checked, [(n, n - 1) for n in range(1, len(checked))], batch_id=chain_id
        )


def batch(
    members: Iterable[PreparedTask],
    *,
    on_success: PreparedTask | None = None,
    on_failure: PreparedTask | None = None,
    on_finish: PreparedTask | None = None,
) -> BatchHandle:
    """Write ``members`` (prepared calls) as one batch, with callbacks that run once,
    when every member has ended: ``on_success`` only if all completed, ``on_failure`` if
    any failed for good or was cancelled, ``on_finish`` always. Returns the batch.

    Inside a member or a callback, ``pq.current_task().batch`` is this batch.
    """
    listed = list(members) if isinstance(members, Iterable) else members
    if not isinstance(listed, list) or not listed:
        raise TaskRefused("batch() needs a non-empty list of pq.prepare(function, ...) calls.")
    checked = [_check_prepared(f"member {n}", member) for n, member in enumerate(listed, 1)]
    callbacks = {
        name: (_check_prepared(f"the callback {name}", given), run_if)
        for name, given, run_if in (
            ("on_success", on_success, None),
            ("on_failure", on_failure, RunIf.FAILED),
            ("on_finish", on_finish, RunIf.ENDED),
        )
        if given is not None
    }
    for name, (callback, _) in callbacks.items():
        if callback.after:
            raise TaskRefused(f"{name} waits for the batch; it takes no after= of its own.")
    alias = pq_settings.DATABASE
    with transaction.atomic(using=alias):
        [(batch_id,)] = store.fetch(store.NEW_BATCH, [BatchKind.BATCH])
        rows = checked + [
            dataclasses.replace(callback, run_if=run_if) for callback, run_if in callbacks.values()
        ]
        count = len(checked)
        links = [(count + n, member) for n in range(len(callbacks)) for member in range(count)]
        written = write_structure(rows, links, batch_id=batch_id)
        named = dict(zip(callbacks, written[count:], strict=True))
        store.fetch(
            store.SET_CALLBACKS,
            [
                *(
                    getattr(named.get(n), "pk", None)
                    for n in ("on_success", "on_failure", "on_finish")
                ),
                batch_id,
            ],
        )
    return BatchHandle(batch_id, written[:count], **named)


def _members(batch_id: int, statuses: list[str]) -> list[int]:
    return [row[0] for row in store.fetch(store.MEMBERS_IN, [int(batch_id), statuses])]


def cancel_batch(batch_id: int) -> list[tuple[int, str]]:
    """Cancel a batch's or chain's members that have not ended: pending and blocked ones at
    once, running ones as ``cancel()`` does. Its callbacks then run by their conditions
    (``on_failure`` and ``on_finish`` run, ``on_success`` is cancelled).
    Returns (id, status) per member it changed."""
    return cancel_many(_members(batch_id, ["pending", "blocked", "running"]))


def retry_batch(batch_id: int) -> list[int]:
    """Retry a batch's or chain's failed and cancelled members (``retry()``); what their
    ends cancelled waits again. Returns the ids put back to pending."""
    return retry_many(_members(batch_id, ["failed", "cancelled"]))


def batch_of(task_id: int) -> BatchHandle | None:
    rows = store.fetch(store.BATCH_OF_TASK, [task_id])
    if not rows:
        return None
    from django_pq.models import Batch

    found = Batch.objects.using(pq_settings.DATABASE).get(pk=rows[0][0])
    by_id = Task.objects.using(pq_settings.DATABASE).in_bulk(found.callback_ids)
    return BatchHandle(
        found.pk,
        on_success=by_id.get(found.on_success_id),
        on_failure=by_id.get(found.on_failure_id),
        on_finish=by_id.get(found.on_finish_id),
    )
