"""The worker loop's timers: when each is due, and how each moves. No clock, no database."""

from __future__ import annotations

import pytest

from django_pq.worker.timers import (
    HEARTBEAT_RETRY,
    MEMORY_CHECK_INTERVAL,
    NEVER,
    PRUNE_INTERVAL,
    Deadline,
    Every,
    Heartbeat,
    Timers,
    seconds_until,
)


def test_a_deadline_is_due_from_its_moment_on():
    deadline = Deadline(10.0)
    assert not deadline.due(9.999)
    assert deadline.due(10.0)
    assert deadline.due(11.0)


def test_an_unset_deadline_is_never_due():
    assert not Deadline().due(1e300)
    assert Deadline().at == NEVER


def test_bringing_a_deadline_forward_keeps_the_sooner_moment():
    deadline = Deadline()
    deadline.bring_forward(20.0)
    assert deadline.at == 20.0
    deadline.bring_forward(30.0)  # later: changes nothing
    assert deadline.at == 20.0
    deadline.bring_forward(15.0)
    assert deadline.at == 15.0


def test_taking_a_due_deadline_uses_it_up():
    deadline = Deadline(5.0)
    assert not deadline.take(4.0)
    assert deadline.at == 5.0  # not due: still set
    assert deadline.take(5.0)
    assert not deadline.take(6.0)  # once only, until set again
    assert deadline.at == NEVER


def test_a_repeating_deadline_restarts_from_the_turn_it_was_due():
    every = Every(0.25, at=1.0)
    assert not every.tick(0.9)
    assert every.at == 1.0
    assert every.tick(1.5)  # late: the next turn counts from now, not from 1.0
    assert every.at == 1.75
    assert not every.tick(1.7)


def test_a_heartbeat_comes_every_interval_while_it_succeeds():
    heartbeat = Heartbeat(10.0, at=0.0)
    assert heartbeat.due(0.0)
    heartbeat.succeeded(3.0)
    assert heartbeat.at == 13.0


def test_a_failed_heartbeat_is_retried_soon_backing_off_up_to_a_quarter_interval():
    heartbeat = Heartbeat(10.0, at=0.0)
    waits = []
    for _ in range(8):
        heartbeat.failed(100.0)
        waits.append(heartbeat.at - 100.0)
    assert waits[0] == pytest.approx(HEARTBEAT_RETRY * 2)
    assert waits[1] == pytest.approx(HEARTBEAT_RETRY * 4)
    assert waits == sorted(waits)
    assert max(waits) == pytest.approx(10.0 / 4)  # never a whole interval of the lease
    heartbeat.succeeded(200.0)  # a success resets the back-off
    heartbeat.failed(300.0)
    assert heartbeat.at - 300.0 == pytest.approx(HEARTBEAT_RETRY * 2)


def test_the_back_off_stays_finite_after_any_number_of_failures():
    heartbeat = Heartbeat(10.0, at=0.0)
    for _ in range(5000):
        heartbeat.failed(0.0)
    assert heartbeat.at == pytest.approx(2.5)


def test_a_starting_worker_has_its_first_chores_due_at_once():
    timers = Timers.start(now=50.0, heartbeat_interval=10.0)
    for due in ("poll", "heartbeat", "fire", "prune", "memory_check", "descendant_scan"):
        assert getattr(timers, due).due(50.0), due
    assert timers.chores_resume.due(50.0)  # not paused
    for unset in ("next_task", "lease", "drain"):
        assert getattr(timers, unset).at == NEVER, unset
    assert timers.prune.interval == PRUNE_INTERVAL
    assert timers.memory_check.interval == MEMORY_CHECK_INTERVAL
    assert timers.heartbeat.interval == 10.0


def test_seconds_until_the_earliest_moment():
    assert seconds_until(10.0, 12.0, 11.5, NEVER) == pytest.approx(1.5)
    assert seconds_until(10.0, 9.0, 20.0) == 0.0  # one is past: no wait
