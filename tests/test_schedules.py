"""Schedules: validation, slot arithmetic across time zones and DST, and the management API."""

from __future__ import annotations

import contextlib
import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import override_settings

import django_pq as pq
from django_pq import declared
from django_pq.models import Periodic, Task
from django_pq.schedules import describe, next_runs, next_slot
from tests.conftest import connect_like_django, received
from tests.testapp import tasks

BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.UTC


def berlin(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=BERLIN)


class TestSlots:
    def test_interval_slots_count_from_the_anchor_not_the_clock(self):
        anchor = dt.datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        after = anchor + dt.timedelta(minutes=12, seconds=30)  # two missed slots, then some
        slot = next_slot(run_every=dt.timedelta(minutes=5), cron=None, timezone="UTC",
                         after=after, anchor=anchor)  # fmt: skip
        assert slot == anchor + dt.timedelta(minutes=15)

    def test_cron_runs_once_on_the_spring_forward_day(self):
        runs = next_runs(run_every=None, cron="30 2 * * *", timezone="Europe/Berlin",
                         after=berlin(2026, 3, 28, 3, 0), count=3)  # fmt: skip
        assert [run.date() for run in runs] == [dt.date(2026, 3, d) for d in (29, 30, 31)]
        # 02:30 does not exist that night; it runs at the same instant, 03:30 CEST.
        assert runs[0] == dt.datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
        assert runs[1] == dt.datetime(2026, 3, 30, 0, 30, tzinfo=UTC)

    def test_cron_runs_once_on_the_fall_back_day(self):
        runs = next_runs(run_every=None, cron="30 2 * * *", timezone="Europe/Berlin",
                         after=berlin(2026, 10, 24, 3, 0), count=3)  # fmt: skip
        assert [run.date() for run in runs] == [dt.date(2026, 10, d) for d in (25, 26, 27)]
        # The first 02:30 (CEST). Compared in UTC: PEP 495 makes a repeated local time unequal
        # to any time in another zone.
        assert runs[0].astimezone(UTC) == dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC)

    def test_cron_after_the_repeated_hour_does_not_fire_again(self):
        second_0215 = dt.datetime(2026, 10, 25, 1, 15, tzinfo=UTC)  # 02:15 CET, fold=1
        slot = next_slot(run_every=None, cron="30 2 * * *", timezone="Europe/Berlin",
                         after=second_0215)  # fmt: skip
        assert slot == dt.datetime(2026, 10, 26, 1, 30, tzinfo=UTC)

    def test_weekly_cron_keeps_local_time_across_dst(self):
        runs = next_runs(run_every=None, cron="0 9 * * 1", timezone="Europe/Berlin",
                         after=berlin(2026, 3, 20, 0, 0), count=2)  # fmt: skip
        assert [(run.hour, run.weekday()) for run in runs] == [(9, 0), (9, 0)]
        assert runs[0].utcoffset() == dt.timedelta(hours=1)
        assert runs[1].utcoffset() == dt.timedelta(hours=2)

    def test_slots_are_strictly_after(self):
        at_slot = dt.datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
        assert next_slot(run_every=None, cron="0 9 * * *", timezone="UTC", after=at_slot) == (
            at_slot + dt.timedelta(days=1)
        )


class TestDescribe:
    @pytest.mark.parametrize(
        ("run_every", "cron", "text"),
        [
            (dt.timedelta(minutes=5), None, "every 5 minutes"),
            (dt.timedelta(hours=1), None, "every hour"),
            (dt.timedelta(hours=1, minutes=30), None, "every 1 hour 30 minutes"),
            (dt.timedelta(seconds=1.5), None, "every 1.5 seconds"),
            (None, "0 9 * * 1", "at 09:00 on Monday (Europe/Berlin)"),
            (None, "30 2 * * *", "at 02:30 every day (Europe/Berlin)"),
            (None, "*/15 * * * *", "every 15 minutes"),
            (None, "0 9 1 * *", "cron '0 9 1 * *' (Europe/Berlin)"),
            # A row written by SQL may hold anything; describing it must not fail.
            (None, "every day at noon", "cron 'every day at noon' (Europe/Berlin)"),
            (None, "0 9 * * 1 2026", "cron '0 9 * * 1 2026' (Europe/Berlin)"),
        ],
    )
    def test_reads_like_a_person_wrote_it(self, run_every, cron, text):
        periodic = Periodic(run_every=run_every, cron=cron, timezone="Europe/Berlin")
        assert describe(periodic) == text


@pytest.mark.django_db
class TestScheduleApi:
    def test_creates_an_active_schedule_with_its_payload(self):
        periodic = pq.schedule(tasks.add, 1, b=2, run_every=dt.timedelta(minutes=5),
                               priority=pq.Priority.HIGH, queue="reports")  # fmt: skip
        periodic.refresh_from_db()
        assert (periodic.name, periodic.key, periodic.active) == (
            "tests.testapp.tasks:add",
            "",
            True,
        )
        assert (periodic.priority, periodic.queue, periodic.max_concurrent) == (75, "reports", 1)
        assert Task(payload=periodic.payload).decoded_arguments() == ((1,), {"b": 2})
        assert periodic.timezone == "UTC" and periodic.next_run > periodic.created_at

    def test_upserts_by_function_and_key(self):
        first = pq.schedule(tasks.noop, run_every=60)
        again = pq.schedule(tasks.noop, run_every=60, priority=80)
        other = pq.schedule(tasks.noop, cron="0 9 * * *", key="morning")
        assert first.pk == again.pk != other.pk
        assert Periodic.objects.count() == 2

    def test_changing_only_options_keeps_next_run(self):
        first = pq.schedule(tasks.noop, run_every=60)
        again = pq.schedule(tasks.noop, run_every=60, priority=80)
        assert again.next_run == first.next_run
        retimed = pq.schedule(tasks.noop, run_every=3600)
        assert retimed.next_run != first.next_run

    def test_rescheduling_keeps_a_pause_unless_told(self):
        pq.schedule(tasks.noop, run_every=60)
        pq.pause(tasks.noop)
        assert pq.schedule(tasks.noop, run_every=60).active is False
        assert pq.schedule(tasks.noop, run_every=60, active=True).active is True

    def test_pause_and_resume(self):
        pq.schedule(tasks.noop, run_every=dt.timedelta(hours=1))
        paused = pq.pause(tasks.noop)
        assert not Periodic.objects.get(pk=paused.pk).active
        resumed = pq.resume("tests.testapp.tasks:noop")
        resumed.refresh_from_db()
        assert resumed.active and resumed.next_run > resumed.updated_at

    def test_unschedule(self):
        pq.schedule(tasks.noop, run_every=60)
        assert pq.unschedule(tasks.noop) is True
        assert pq.unschedule(tasks.noop) is False

    def test_workers_hear_about_schedule_changes(self, listener):
        pq.schedule(tasks.noop, run_every=60)
        assert received(listener, timeout=5, expect=1) == ["s:"]

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({}, "exactly one of run_every"),
            ({"run_every": 60, "cron": "* * * * *"}, "exactly one of run_every"),
            ({"run_every": dt.timedelta(0)}, "positive timedelta"),
            ({"run_every": -5}, "positive timedelta"),
            ({"cron": "61 * * * *"}, "out of range"),
            ({"cron": "* * *"}, "five fields"),
            ({"cron": "0 0 9 * * 1"}, "five fields"),
            ({"cron": "0 9 * * 1", "timezone": "Mars/Olympus"}, "not a known IANA time zone"),
            ({"run_every": 60, "max_concurrent": 0}, "max_concurrent must be an integer >= 1"),
            ({"run_every": 60, "priority": 500}, "priority must be an integer"),
        ],
    )
    def test_bad_schedules_are_refused_with_the_reason(self, options, message):
        with pytest.raises(
            pq.InvalidSchedule if "priority" not in options else pq.TaskRefused
        ) as caught:
            pq.schedule(tasks.noop, **options)
        assert message in str(caught.value)
        assert not Periodic.objects.exists()

    def test_lambdas_are_refused_as_for_enqueue(self):
        with pytest.raises(pq.NotATaskFunction):
            pq.schedule(lambda: None, run_every=60)


@pytest.mark.django_db
class TestRefusedBeforeTheDatabase:
    @pytest.mark.parametrize(
        ("options", "option"),
        [
            ({"run_every": dt.timedelta(days=10**8)}, "run_every"),
            ({"run_every": 1e20}, "run_every"),
            ({"run_every": float("nan")}, "run_every"),
            ({"cron": "0 0 30 2 *"}, "cron"),
            ({"cron": "0 0 31 4,6,9,11 *"}, "cron"),
            ({"run_every": 60, "key": "a\x00"}, "key"),
            ({"run_every": 60, "client_id": "\x00"}, "client_id"),
            ({"run_every": 60, "client_id": "c" * 256}, "client_id"),
            ({"cron": "* * * * *", "timezone": "Europe/" + "x" * 60}, "timezone"),
            ({"run_every": 60, "max_concurrent": 2**40}, "max_concurrent"),
            ({"run_every": 60, "queue": "q\x00"}, "queue"),
            ({"run_every": 60, "max_attempts": 2**40}, "max_attempts"),
        ],
    )
    def test_refused_at_the_call_leaving_the_transaction_usable(self, watcher, options, option):
        with transaction.atomic():
            with pytest.raises(pq.TaskRefused) as caught:
                pq.schedule(tasks.noop, **options)
            assert str(caught.value).startswith(option), caught.value
            kept = pq.schedule(tasks.noop, key="kept", run_every=60)
        assert watcher.execute("SELECT id FROM pq_periodic").fetchall() == [(kept.pk,)]

    def test_a_leap_day_cron_is_accepted(self):
        assert pq.schedule(tasks.noop, cron="0 0 29 2 *").next_run.day == 29


class TestDisabledSchedules:
    def disable(self, periodic: Periodic, **columns: object) -> None:
        """Break the row as a raw writer would, and let a worker's firing disable it."""
        from django_pq.conf import pq_settings
        from django_pq.worker.firing import fire_due

        assignments = ", ".join(f"{name} = %s" for name in columns)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE pq_periodic SET {assignments}, next_run = now() WHERE id = %s",
                [*columns.values(), periodic.pk],
            )
        with contextlib.closing(connect_like_django()) as conn:
            fire_due(conn, pq_settings.NOTIFY_CHANNEL, 1)
        periodic.refresh_from_db()
        assert not periodic.active and periodic.error

    def test_resuming_clears_the_error_once_the_timing_is_fixed(self, transactional_db):
        periodic = pq.schedule(tasks.noop, cron="0 9 * * *")
        self.disable(periodic, cron="0 0 30 2 *")
        with pytest.raises(pq.InvalidSchedule) as caught:
            pq.resume(tasks.noop)
        assert "cannot be resumed" in str(caught.value) and "never fires" in str(caught.value)
        periodic.refresh_from_db()
        assert not periodic.active and "never fires" in periodic.error
        pq.schedule(tasks.noop, cron="0 9 * * *")  # fixed; stays paused until resumed
        periodic.refresh_from_db()
        assert not periodic.active and periodic.error
        pq.resume(tasks.noop)
        periodic.refresh_from_db()
        assert periodic.active and periodic.error == ""

    def test_scheduling_it_active_again_clears_the_error(self, transactional_db):
        periodic = pq.schedule(tasks.noop, cron="0 9 * * *")
        self.disable(periodic, timezone="Mars/Olympus_Mons")
        pq.schedule(tasks.noop, cron="0 9 * * *", timezone="UTC", active=True)
        periodic.refresh_from_db()
        assert periodic.active and periodic.error == ""


@pytest.mark.django_db(transaction=True)
class TestRunNow:
    def test_creates_one_run_without_moving_next_run(self):
        periodic = pq.schedule(tasks.add, 1, 2, run_every=dt.timedelta(hours=1))
        task = periodic.run_now()
        assert task is not None and task.periodic_id == periodic.pk
        assert task.decoded_arguments() == ((1, 2), {})
        assert Periodic.objects.get(pk=periodic.pk).next_run == periodic.next_run

    def test_respects_max_concurrent(self):
        periodic = pq.schedule(tasks.noop, run_every=dt.timedelta(hours=1), max_concurrent=1)
        assert periodic.run_now() is not None
        assert periodic.run_now() is None
        unlimited = pq.schedule(tasks.noop, run_every=dt.timedelta(hours=1), key="u",
                                max_concurrent=None)  # fmt: skip
        assert unlimited.run_now() is not None and unlimited.run_now() is not None


@pytest.mark.django_db
class TestDeclaredSchedules:
    @pytest.fixture(autouse=True)
    def only_test_declarations(self, monkeypatch):
        monkeypatch.setattr(declared, "_DECORATED", [])

    @override_settings(PQ_SCHEDULES=[{"task": "tests.testapp.tasks.add", "args": [1, 2],
                                      "run_every": 300, "key": "from-settings"}])  # fmt: skip
    def test_settings_and_decorators_sync_idempotently_and_keep_a_pause(self):
        declared.periodic(cron="0 9 * * 1", timezone="Europe/Berlin")(tasks.noop)
        call_command("pq_sync_schedules", verbosity=0)
        assert set(Periodic.objects.values_list("name", "key", "is_declared")) == {
            ("tests.testapp.tasks:add", "from-settings", True),
            ("tests.testapp.tasks:noop", "", True),
        }
        pq.pause(tasks.noop)
        before = list(Periodic.objects.order_by("pk").values())
        call_command("pq_sync_schedules", verbosity=0)
        assert list(Periodic.objects.order_by("pk").values()) == before

    def test_prune_removes_only_undeclared_code_schedules(self):
        declared.periodic(run_every=60)(tasks.noop)
        call_command("pq_sync_schedules", verbosity=0)
        pq.schedule(tasks.add, 1, 1, run_every=60)  # made by hand (or in the admin)
        declared._DECORATED.clear()
        call_command("pq_sync_schedules", verbosity=0)
        assert Periodic.objects.count() == 2
        call_command("pq_sync_schedules", "--prune", verbosity=0)
        assert list(Periodic.objects.values_list("name", flat=True)) == ["tests.testapp.tasks:add"]

    @override_settings(PQ_SCHEDULES=[{"task": "tests.testapp.tasks.nope", "run_every": 60}])
    def test_an_unimportable_declaration_names_the_entry(self):
        from django.core.management.base import CommandError

        with pytest.raises(CommandError, match=r"PQ_SCHEDULES\[0\].*cannot be imported"):
            call_command("pq_sync_schedules", verbosity=0)

    def test_the_same_function_twice_needs_keys(self):
        declared.periodic(run_every=60)(tasks.noop)
        declared.periodic(run_every=120)(tasks.noop)
        with pytest.raises(pq.InvalidSchedule, match="declared twice"):
            declared.declared_schedules()
