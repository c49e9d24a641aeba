"""pq_status and the snapshot behind it, against real rows."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone
from model_bakery import baker

from django_pq.models import Periodic, Status, Task, Worker
from django_pq.status import snapshot

pytestmark = pytest.mark.django_db


def pq_status(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("pq_status", *args, stdout=out, stderr=io.StringIO())
    except SystemExit as exit:
        return int(exit.code or 0), out.getvalue()
    return 0, out.getvalue()


@pytest.fixture
def busy_queue() -> dict[str, Any]:
    now = timezone.now()
    worker = baker.make(
        Worker, hostname="box", pid=42, concurrency=4, lease_expires_at=now + timedelta(minutes=1)
    )
    baker.make(  # a worker whose lease lapsed is not live
        Worker, hostname="gone", pid=1, concurrency=1, lease_expires_at=now - timedelta(minutes=1)
    )
    baker.make(Task, name="app.tasks:mail", queue="mail", _quantity=3,
               run_at=now - timedelta(minutes=10))  # fmt: skip
    baker.make(Task, name="app.tasks:mail", queue="mail", run_at=now + timedelta(hours=1))
    running = baker.make(
        Task, name="app.tasks:report", status=Status.RUNNING, worker_id=worker.id,
        run_token=uuid.uuid4(), started_at=now - timedelta(seconds=30), attempts=1,
    )  # fmt: skip
    baker.make(
        Task, name="app.tasks:report", status=Status.FAILED, error_code="exception",
        started_at=now - timedelta(seconds=10), finished_at=now - timedelta(seconds=8),
    )  # fmt: skip
    baker.make(Periodic, name="app.tasks:sync", run_every=timedelta(minutes=5),
               next_run=now + timedelta(minutes=2))  # fmt: skip
    return {"worker": worker, "running": running}


def test_snapshot_counts_queues_ages_running_workers_and_schedules(busy_queue: Any) -> None:
    state = snapshot()
    mail = [count for count in state.queues if count.queue == "mail"]
    assert sum(c.count for c in mail) == 4
    assert sum(c.ready for c in mail) == 3
    assert 590 < state.oldest_ready_age["mail"] < 700
    [running] = state.running
    assert (running.id, running.worker_id) == (
        busy_queue["running"].pk,
        str(busy_queue["worker"].id),
    )
    [worker] = state.workers
    assert (worker.hostname, worker.running) == ("box", 1)
    [schedule] = state.schedules
    assert schedule.name == "app.tasks:sync" and 60 < schedule.due_in <= 120
    [finished] = state.finished
    assert (finished.name, finished.status, finished.count) == ("app.tasks:report", "failed", 1)
    assert finished.seconds == pytest.approx(2.0)


def test_pq_status_prints_tables_and_exits_0_with_a_live_worker(busy_queue: Any) -> None:
    code, out = pq_status()
    assert code == 0
    assert "mail" in out and "box:42" in out and "app.tasks:sync" in out
    queue_line = next(line for line in out.splitlines() if line.startswith("mail"))
    assert queue_line.split()[1:4] == ["3", "1", "0"]  # ready, scheduled, running


def test_pq_status_json(busy_queue: Any) -> None:
    code, out = pq_status("--json")
    data = json.loads(out)
    assert code == 0
    assert data["has_live_worker"] is True
    assert data["workers"][0]["hostname"] == "box"
    assert data["running"][0]["name"] == "app.tasks:report"
    assert data["schedules"][0]["next_run"].endswith("+00:00")


def test_pq_status_exits_1_without_a_live_worker() -> None:
    baker.make(Task, name="app.tasks:mail")
    code, out = pq_status()
    assert code == 1
    assert "No live worker" in out
    code, out = pq_status("--json")
    assert (code, json.loads(out)["has_live_worker"]) == (1, False)


def test_pq_status_refuses_negative_limits() -> None:
    code, _ = pq_status("--schedules", "-1")
    assert code == 2


def test_disabled_schedules_are_shown_with_their_error(busy_queue: Any) -> None:
    error = "cron '0 0 30 2 *' never fires after 2026-12-02. Fix the schedule, then resume it."
    baker.make(Periodic, name="app.tasks:broken", key="feb", cron="0 0 30 2 *", run_every=None,
               active=False, error=error)  # fmt: skip
    baker.make(
        Periodic, name="app.tasks:paused", key="", run_every=timedelta(minutes=5), active=False
    )  # paused by a person: no error, so not listed
    [disabled] = snapshot().disabled_schedules
    assert (disabled.name, disabled.key, disabled.error) == ("app.tasks:broken", "feb", error)
    code, out = pq_status()
    assert code == 0
    section = out.split("Disabled schedules (1)", 1)[1]
    assert "app.tasks:broken[feb]" in section and error in section
    assert "app.tasks:paused" not in out
    _, text = pq_status("--json")
    [shown] = json.loads(text)["disabled_schedules"]
    assert shown["name"] == "app.tasks:broken" and shown["error"] == error
    assert shown["disabled_at"] == disabled.disabled_at.isoformat()


def test_no_disabled_section_when_none_is_disabled(busy_queue: Any) -> None:
    assert "Disabled schedules" not in pq_status()[1]
    assert json.loads(pq_status("--json")[1])["disabled_schedules"] == []
