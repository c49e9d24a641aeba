"""enqueue, enqueue_many, upsert, cancel, retry: what users rely on when they write work."""

from __future__ import annotations

import datetime as dt
import threading
import time
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext, override_settings
from model_bakery import baker

import django_pq as pq
from django_pq.models import ErrorCode, Status, Task
from django_pq.timing import EARLIEST_MOMENT, LATEST_MOMENT
from tests.conftest import connect_like_django, received
from tests.testapp import tasks

pytestmark = pytest.mark.django_db


def db_now() -> dt.datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]


def committed_ids(watcher) -> set[int]:
    return {row[0] for row in watcher.execute("SELECT id FROM pq_tasks").fetchall()}


class TestEnqueue:
    def test_returns_the_pending_task_with_its_options(self):
        task = pq.enqueue(
            tasks.add,
            1,
            b=2,
            priority=pq.Priority.HIGH,
            queue="mail",
            client_id="c-1",
            max_attempts=3,
            max_runtime=dt.timedelta(seconds=90),
        )
        stored = Task.objects.get(pk=task.pk)
        assert stored.name == "tests.testapp.tasks:add"
        assert stored.decoded_arguments() == ((1,), {"b": 2})
        assert (stored.status, stored.queue, stored.priority) == ("pending", "mail", 75)
        assert (stored.client_id, stored.max_attempts, stored.max_runtime) == ("c-1", 3, 90.0)
        assert stored.attempts == 0 and stored.run_token is None

    def test_the_returned_task_is_the_stored_row_field_for_field(self):
        returned = [
            pq.enqueue(tasks.add, 1, b={"nested": [1, 2]}, client_id="whole", max_runtime=5),
            pq.upsert(tasks.add, 2, client_id="upserted"),
            *pq.enqueue_many([pq.prepare(tasks.noop), pq.prepare(tasks.add, 3, 4)]),
        ]
        for task in returned:
            stored = Task.objects.get(pk=task.pk)
            for field in Task._meta.concrete_fields:
                assert getattr(task, field.attname) == getattr(stored, field.attname), field.name
            assert task._state.db == "default" and not task._state.adding
        assert returned[0].payload == Task.objects.get(pk=returned[0].pk).payload
        assert isinstance(returned[0].payload, dict)

    def test_default_run_at_is_the_database_clock(self):
        with transaction.atomic():
            now = db_now()
            task = pq.enqueue(tasks.noop)
            delayed = pq.enqueue(tasks.noop, run_at=dt.timedelta(minutes=5))
        assert task.run_at == now
        assert delayed.run_at == now + dt.timedelta(minutes=5)

    def test_aware_run_at_is_kept(self):
        when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
        assert pq.enqueue(tasks.noop, run_at=when).run_at == when

    def test_arguments_round_trip_with_rich_types(self):
        when = dt.datetime(2026, 11, 25, 9, 30, tzinfo=dt.UTC)
        task = pq.enqueue(tasks.echo, Decimal("1.10"), when=when, tags=("a", "b"))
        assert Task.objects.get(pk=task.pk).decoded_arguments() == (
            (Decimal("1.10"),),
            {"when": when, "tags": ("a", "b")},
        )

    def test_option_names_never_reach_the_task(self):
        task = pq.enqueue(tasks.echo, 1, queue="q", other=2)
        assert task.decoded_arguments() == ((1,), {"other": 2})
        assert task.queue == "q"

    @override_settings(PQ_MAX_ATTEMPTS=4, PQ_DEFAULT_QUEUE="work")
    def test_defaults_come_from_settings_at_call_time(self):
        task = pq.enqueue(tasks.noop)
        assert (task.max_attempts, task.queue) == (4, "work")


class TestTransactions:
    def test_rolled_back_enqueue_leaves_no_row_and_no_notification(self, watcher, listener):
        with pytest.raises(RuntimeError), transaction.atomic():
            task = pq.enqueue(tasks.noop)
            raise RuntimeError("the order failed")
        assert task.pk not in committed_ids(watcher)
        assert not Task.objects.filter(pk=task.pk).exists()
        assert received(listener) == []

    def test_committed_enqueue_is_seen_and_notified_only_after_commit(self, watcher, listener):
        with transaction.atomic():
            task = pq.enqueue(tasks.noop, queue="mail")
            assert task.pk not in committed_ids(watcher)
            assert received(listener) == []
        assert task.pk in committed_ids(watcher)
        notes = received(listener, timeout=5, expect=1)
        assert len(notes) == 1 and notes[0].startswith("t:") and notes[0].endswith(":mail")

    def test_outside_atomic_enqueue_autocommits(self, watcher, listener):
        task = pq.enqueue(tasks.noop)
        assert task.pk in committed_ids(watcher)
        assert len(received(listener, timeout=5, expect=1)) == 1

    def test_savepoint_rollback_drops_only_the_inner_task(self, watcher):
        with transaction.atomic():
            outer = pq.enqueue(tasks.noop)
            with pytest.raises(RuntimeError), transaction.atomic():
                inner = pq.enqueue(tasks.noop)
                raise RuntimeError
            after = pq.enqueue(tasks.noop)
        assert committed_ids(watcher) == {outer.pk, after.pk}
        assert inner.pk not in committed_ids(watcher)

    def test_enqueue_many_notifies_once_per_queue(self, listener):
        pq.enqueue_many([pq.prepare(tasks.noop, queue=name) for name in ["a", "b", "a", "a"]])
        notes = received(listener, timeout=5, expect=2)
        assert sorted(note.rsplit(":", 1)[1] for note in notes) == ["a", "b"]


class TestRefusals:
    def refused(self, error_type, *args, **kwargs):
        with pytest.raises(error_type) as caught:
            pq.enqueue(*args, **kwargs)
        assert not Task.objects.exists()
        return str(caught.value)

    def test_lambda(self):
        assert "Lambdas cannot be tasks" in self.refused(pq.NotATaskFunction, lambda: None)

    def test_closure(self):
        message = self.refused(pq.NotATaskFunction, tasks.make_closure())
        assert "inside another function" in message and "module level" in message

    def test_bound_method(self):
        message = self.refused(pq.NotATaskFunction, tasks.Greeter().greet, "x")
        assert "bound method" in message and "primary key" in message

    def test_function_outside_allowed_modules(self):
        import json

        message = self.refused(pq.NotATaskFunction, json.dumps, {})
        assert "json.dumps" in message and "PQ_ALLOWED_MODULES" in message

    def test_builtin_outside_allowed_modules(self):
        import os

        assert "PQ_ALLOWED_MODULES" in self.refused(pq.NotATaskFunction, os.getpid)

    @override_settings(PQ_ALLOWED_MODULES=["tests.testapp.tasks"])
    def test_allow_list_replaces_installed_apps(self):
        assert pq.enqueue(tasks.noop).name == "tests.testapp.tasks:noop"

    @override_settings(PQ_ALLOWED_MODULES=["example"])
    def test_allow_list_excludes_the_rest(self):
        self.refused(pq.NotATaskFunction, tasks.noop)

    def test_model_instance_argument_names_it_and_suggests_the_pk(self):
        message = self.refused(pq.UnserializableArgument, tasks.echo, user=User(username="u"))
        assert "'user'" in message and ".pk" in message

    def test_unencodable_positional_argument_names_its_position(self):
        message = self.refused(pq.UnserializableArgument, tasks.echo, 1, object())
        assert "positional argument 2" in message

    def test_naive_run_at_with_use_tz(self):
        message = self.refused(pq.TaskRefused, tasks.noop, run_at=dt.datetime(2030, 1, 1))
        assert "naive" in message and "make_aware" in message

    @pytest.mark.parametrize("priority", [-1, 101, 2.5, True, "high"])
    def test_priority_out_of_range(self, priority):
        assert "priority must be an integer from 0" in self.refused(
            pq.TaskRefused, tasks.noop, priority=priority
        )

    @pytest.mark.parametrize("max_runtime", [0, -1, float("inf"), "10"])
    def test_max_runtime_not_positive(self, max_runtime):
        assert "max_runtime must be a positive" in self.refused(
            pq.TaskRefused, tasks.noop, max_runtime=max_runtime
        )

    @pytest.mark.parametrize("max_attempts", [0, -3, 1.5])
    def test_max_attempts_below_one(self, max_attempts):
        assert "max_attempts must be an integer >= 1" in self.refused(
            pq.TaskRefused, tasks.noop, max_attempts=max_attempts
        )

    @pytest.mark.parametrize("queue", ["", 7, "q" * 101])
    def test_bad_queue(self, queue):
        assert "queue must be a non-empty string" in self.refused(
            pq.TaskRefused, tasks.noop, queue=queue
        )

    def test_refusals_are_value_errors_and_pq_errors(self):
        with pytest.raises(ValueError):
            pq.enqueue(tasks.noop, priority=500)
        with pytest.raises(pq.PQError):
            pq.enqueue(tasks.noop, priority=500)


#: Options the database would refuse with a DataError (aborting the caller's transaction),
#: each with the option its TaskRefused must name.
BEYOND_THE_DATABASE = [
    ({"queue": "mail\x00"}, "queue"),
    ({"client_id": "order-\x00-1"}, "client_id"),
    ({"max_attempts": 2**40}, "max_attempts"),
    ({"run_at": dt.timedelta(days=10**8)}, "run_at"),
    ({"run_at": -dt.timedelta(days=10**6)}, "run_at"),
    ({"run_at": dt.datetime.max.replace(tzinfo=dt.UTC)}, "run_at"),
    ({"run_at": dt.datetime(1, 1, 1, tzinfo=dt.UTC)}, "run_at"),
]


def _write(call: str, options: dict) -> None:
    if call == "enqueue":
        pq.enqueue(tasks.noop, **options)
    elif call == "enqueue_many":
        pq.enqueue_many([pq.prepare(tasks.noop, **options)])
    else:
        pq.upsert(tasks.noop, **{"client_id": "key", **options})


class TestRefusedBeforeTheDatabase:
    @pytest.mark.parametrize("call", ["enqueue", "enqueue_many", "upsert"])
    @pytest.mark.parametrize(("options", "option"), BEYOND_THE_DATABASE)
    def test_refused_at_the_call_leaving_the_transaction_usable(
        self, watcher, call, options, option
    ):
        with transaction.atomic():
            with pytest.raises(pq.TaskRefused) as caught:
                _write(call, options)
            assert str(caught.value).startswith(option), caught.value
            later = pq.enqueue(tasks.noop)  # a failed statement would make this fail
        assert committed_ids(watcher) == {later.pk}

    def test_the_edges_of_the_moment_range_are_accepted(self):
        first = pq.enqueue(tasks.noop, run_at=EARLIEST_MOMENT)
        last = pq.enqueue(tasks.noop, run_at=LATEST_MOMENT)
        assert (first.run_at, last.run_at) == (EARLIEST_MOMENT, LATEST_MOMENT)


class TestDuplicateClientId:
    def test_is_an_integrity_error_naming_the_client_id(self):
        pq.enqueue(tasks.noop, client_id="receipt-1")
        with pytest.raises(IntegrityError) as caught:
            pq.enqueue(tasks.noop, client_id="receipt-1")
        assert isinstance(caught.value, pq.DuplicateClientId)
        assert "'receipt-1'" in str(caught.value) and "upsert" in str(caught.value)

    def test_transaction_stays_usable_after_the_refusal(self, watcher):
        pq.enqueue(tasks.noop, client_id="receipt-1")
        with transaction.atomic():
            with pytest.raises(pq.DuplicateClientId):
                pq.enqueue(tasks.noop, client_id="receipt-1")
            later = pq.enqueue(tasks.noop, client_id="receipt-2")
        assert later.pk in committed_ids(watcher)


class TestEnqueueMany:
    def test_writes_all_in_one_statement_in_input_order(self):
        calls = [pq.prepare(tasks.add, n, n, priority=n) for n in range(50)]
        with CaptureQueriesContext(connection) as queries:
            written = pq.enqueue_many(calls)
        inserts = [q for q in queries.captured_queries if "INSERT INTO pq_tasks" in q["sql"]]
        assert len(inserts) == 1
        assert [task.priority for task in written] == list(range(50))
        assert Task.objects.count() == 50

    def test_a_duplicate_client_id_writes_none(self):
        pq.enqueue(tasks.noop, client_id="dup")
        calls = [pq.prepare(tasks.noop, client_id=c) for c in ["new-1", "dup", "new-2"]]
        with pytest.raises(pq.DuplicateClientId) as caught:
            pq.enqueue_many(calls)
        assert caught.value.client_ids == ["dup"]
        assert list(Task.objects.values_list("client_id", flat=True)) == ["dup"]

    def test_skip_duplicates_writes_the_rest(self):
        pq.enqueue(tasks.noop, client_id="dup")
        calls = [pq.prepare(tasks.noop, client_id=c) for c in ["new-1", "dup", "new-2"]]
        written = pq.enqueue_many(calls, skip_duplicates=True)
        assert [task.client_id for task in written] == ["new-1", "new-2"]

    def test_empty_batch_writes_nothing(self):
        assert pq.enqueue_many([]) == []


def start_running(task: Task) -> None:
    """Put a task in the state a worker's claim leaves it in."""
    Task.objects.filter(pk=task.pk).update(
        status=Status.RUNNING, attempts=1, run_token="00000000-0000-0000-0000-000000000001"
    )


class TestUpsert:
    def test_creates_a_pending_task(self):
        task = pq.upsert(tasks.add, 1, 2, client_id="sum")
        assert task.status == "pending" and task.decoded_arguments() == ((1, 2), {})

    def test_overwrites_a_pending_task(self):
        first = pq.upsert(tasks.add, 1, 2, client_id="sum")
        second = pq.upsert(tasks.add, 5, 6, client_id="sum", priority=80)
        assert second.pk == first.pk and Task.objects.count() == 1
        assert (second.priority, second.decoded_arguments()) == (80, ((5, 6), {}))

    def test_resets_a_finished_task_to_pending(self):
        task = baker.make(
            Task,
            name="tests.testapp.tasks:add",
            client_id="sum",
            status=Status.FAILED,
            attempts=3,
            error="boom",
            error_code=ErrorCode.EXCEPTION,
            result={"x": 1},
        )
        again = pq.upsert(tasks.add, 1, 2, client_id="sum")
        assert again.pk == task.pk
        assert (again.status, again.attempts, again.error, again.error_code) == (
            "pending",
            0,
            "",
            "",
        )
        assert again.result is None

    def test_parks_the_new_version_on_a_running_task(self):
        task = pq.upsert(tasks.add, 1, 2, client_id="sum")
        start_running(task)
        parked = pq.upsert(tasks.add, 3, 4, client_id="sum", priority=90)
        assert parked.status == "running" and parked.attempts == 1
        assert parked.decoded_arguments() == ((1, 2), {})
        assert parked.requeue["priority"] == 90
        latest = pq.upsert(tasks.add, 7, 8, client_id="sum")
        assert latest.decoded_arguments() == ((1, 2), {})
        assert Task(payload=latest.requeue["payload"]).decoded_arguments() == ((7, 8), {})

    def test_concurrent_upserts_on_a_running_task_serialize(self, transactional_db):
        """Two connections upsert one client_id while it runs: the second waits for the
        first's commit, the later version is the one parked, and there is still one row."""
        task = pq.upsert(tasks.add, 0, 0, client_id="race")
        start_running(task)
        first_upserted, release_first = threading.Event(), threading.Event()
        errors: list[BaseException] = []

        def in_thread(body):
            def run() -> None:
                from django.db import connections

                try:
                    body()
                except BaseException as error:  # reported by the assertion below
                    errors.append(error)
                    first_upserted.set()
                finally:
                    connections.close_all()

            return threading.Thread(target=run)

        def first() -> None:
            with transaction.atomic():
                pq.upsert(tasks.add, 1, 1, client_id="race")
                first_upserted.set()
                assert release_first.wait(10)

        def second() -> None:
            pq.upsert(tasks.add, 2, 2, client_id="race")

        threads = [in_thread(first), in_thread(second)]
        threads[0].start()
        assert first_upserted.wait(10)
        threads[1].start()
        wait_for_lock_wait()
        release_first.set()
        for thread in threads:
            thread.join(10)
        assert errors == []
        row = Task.objects.get(client_id="race")
        assert row.status == "running" and Task.objects.count() == 1
        assert row.decoded_arguments() == ((0, 0), {})
        assert Task(payload=row.requeue["payload"]).decoded_arguments() == ((2, 2), {})

    def test_concurrent_first_upserts_make_one_row(self, transactional_db):
        results: list[int] = []
        barrier = threading.Barrier(4)

        def worker(n: int) -> None:
            from django.db import connections

            try:
                barrier.wait()
                results.append(pq.upsert(tasks.add, n, n, client_id="one").pk)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(results)) == 1 and Task.objects.count() == 1


def wait_for_lock_wait(timeout: float = 10.0) -> None:
    """Wait until some other session is blocked on a lock (the racing upsert)."""
    deadline = time.monotonic() + timeout
    with connect_like_django() as observer:
        while time.monotonic() < deadline:
            waiting = observer.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            ).fetchone()[0]
            if waiting:
                return
            time.sleep(0.01)
    raise AssertionError("the second upsert never waited for the row lock")


class TestCancel:
    def test_pending_task_is_cancelled(self):
        task = pq.enqueue(tasks.noop)
        assert pq.cancel(task) is True
        task.refresh_from_db()
        assert (task.status, task.error_code) == ("cancelled", "cancelled")
        assert task.finished_at is not None

    def test_running_task_is_marked_and_its_worker_notified(self, listener):
        task = pq.enqueue(tasks.noop)
        assert len(received(listener, timeout=5, expect=1)) == 1
        start_running(task)
        assert pq.cancel(task.pk) is True
        task.refresh_from_db()
        assert task.status == "running" and task.is_cancel_requested
        assert received(listener, timeout=5, expect=1) == [f"c:{task.pk}"]

    def test_cancelling_a_running_task_drops_its_parked_version(self):
        task = pq.upsert(tasks.noop, client_id="x")
        start_running(task)
        pq.upsert(tasks.noop, client_id="x")
        pq.cancel(task)
        task.refresh_from_db()
        assert task.requeue is None

    def test_finished_task_is_left_alone(self):
        task = baker.make(Task, name="x:y", status=Status.COMPLETED)
        assert pq.cancel(task) is False
        task.refresh_from_db()
        assert task.status == "completed"

    def test_missing_task(self):
        with pytest.raises(Task.DoesNotExist):
            pq.cancel(987654)


class TestRetry:
    @pytest.mark.parametrize("status", [Status.FAILED, Status.CANCELLED])
    def test_failed_or_cancelled_goes_back_to_pending_with_attempts_kept(self, status):
        task = baker.make(
            Task,
            name="x:y",
            status=status,
            attempts=2,
            max_attempts=2,
            error="boom",
            error_code=ErrorCode.EXCEPTION,
            finished_at=db_now(),
        )
        assert pq.retry(task) is True
        task.refresh_from_db()
        assert (task.status, task.attempts, task.finished_at) == ("pending", 2, None)

    @pytest.mark.parametrize("status", [Status.PENDING, Status.COMPLETED])
    def test_other_states_are_left_alone(self, status):
        task = baker.make(Task, name="x:y", status=status)
        assert pq.retry(task) is False

    def test_missing_task(self):
        with pytest.raises(Task.DoesNotExist):
            pq.retry(987654)


class TestQuerySets:
    def test_lookups_named_after_states(self):
        for status in Status.values:
            baker.make(
                Task,
                name="x:y",
                status=status,
                _quantity=2,
                run_token="00000000-0000-0000-0000-000000000001",
            )
        for status in Status.values:
            assert getattr(Task.objects, status)().count() == 2
        assert Task.objects.finished().count() == 6
        assert Task.objects.unfinished().count() == 6

    def test_ready_and_scheduled_use_the_database_clock(self):
        ready = pq.enqueue(tasks.noop)
        later = pq.enqueue(tasks.noop, run_at=dt.timedelta(hours=1))
        assert list(Task.objects.ready()) == [ready]
        assert list(Task.objects.scheduled()) == [later]

    def test_by_client_id_and_for_function(self):
        task = pq.enqueue(tasks.add, 1, 2, client_id="abc")
        pq.enqueue(tasks.noop)
        assert Task.objects.by_client_id("abc") == task
        assert list(Task.objects.for_function(tasks.add)) == [task]
        assert list(Task.objects.for_function("tests.testapp.tasks:add")) == [task]
        with pytest.raises(Task.DoesNotExist):
            Task.objects.by_client_id("nope")


def test_public_names_stay_functions_after_submodules_load():
    """`pq.enqueue` must be the function even once `django_pq.<submodule>` is imported (a
    submodule named like a function would shadow it on the package)."""
    import importlib
    import pkgutil

    import django_pq

    for module in pkgutil.iter_modules(django_pq.__path__):
        if module.name not in {"admin"}:
            importlib.import_module(f"django_pq.{module.name}")
    for name in django_pq.__all__:
        value = getattr(django_pq, name)
        assert not isinstance(value, type(django_pq)), f"django_pq.{name} is a module"
