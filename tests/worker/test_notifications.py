"""Notifications are hints: a role that can only connect changes nothing by sending them."""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from django.db import connection

import django_pq as pq
from django_pq import notify
from django_pq.conf import pq_settings
from django_pq.models import Task
from tests.conftest import connect_like_django
from tests.testapp import tasks
from tests.testapp.models import RunLog
from tests.worker.conftest import wait_until


@pytest.fixture
def connect_only_role(transactional_db):
    """A real role that may log in and nothing else: no table, schema or function rights."""
    name = f"pq_stranger_{uuid.uuid4().hex[:8]}"
    with connect_like_django() as admin:
        admin.execute(f"CREATE ROLE {name} LOGIN")
    params = connection.settings_dict
    conn = psycopg.connect(
        dbname=params["NAME"],
        user=name,
        host=params["HOST"] or None,
        port=params["PORT"] or None,
        autocommit=True,
    )
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT 1 FROM pq_tasks")
    try:
        yield conn
    finally:
        conn.close()
        with connect_like_django() as admin:
            admin.execute(f"DROP ROLE {name}")


GARBAGE = [
    "t:x",
    "t:abc:default",
    "t:NaN:default",
    "t:Infinity:default",
    "t:1e999:default",
    "t::",
    "c:²",
    "c:",
    "c:-1",
    "c:99999999999999999999999",
    "s:whatever",
    "reconnected",
    "odd: \u202e\ufffd",
    "x" * 7999,
    ":" * 50,
]


def test_a_connect_only_role_can_neither_crash_a_worker_nor_cancel_its_task(
    start_worker, connect_only_role
):
    release = Path(tempfile.mkdtemp()) / "release"
    running = pq.enqueue(tasks.wait_for_file, str(release), label="victim", timeout=120)
    worker = start_worker("--concurrency", "2")
    wait_until(lambda: RunLog.objects.filter(event="start", value="victim").exists(), 30)
    channel = pq_settings.NOTIFY_CHANNEL
    for payload in [*GARBAGE, notify.cancel_requested(running.pk)]:
        connect_only_role.execute("SELECT pg_notify(%s, %s)", [channel, payload])
    # Healthy work still flows past all of that, on the worker's free slot.
    healthy = pq.enqueue(tasks.add, 20, 22)
    wait_until(lambda: Task.objects.get(pk=healthy.pk).status == "completed", 30)
    # The forged cancel went through one more loop turn: the task still runs.
    connect_only_role.execute("SELECT pg_notify(%s, %s)", [channel, notify.task_ready(0, "x")])
    second = pq.enqueue(tasks.add, 1, 1)
    wait_until(lambda: Task.objects.get(pk=second.pk).status == "completed", 30)
    running.refresh_from_db()
    assert (running.status, running.is_cancel_requested) == ("running", False)
    assert worker.process.poll() is None, worker.output()
    release.touch()
    wait_until(lambda: Task.objects.get(pk=running.pk).status == "completed", 30)
    with contextlib.suppress(FileNotFoundError):
        release.unlink()


def test_a_real_cancel_still_stops_the_running_task_at_once(start_worker):
    """The notification wakes the worker, the row confirms it: no heartbeat needed."""
    running = pq.enqueue(tasks.sleep, 600, label="cancel me")
    worker = start_worker(
        "--concurrency", "1", settings={"PQ_HEARTBEAT_INTERVAL": 60.0, "PQ_LEASE": 180.0}
    )
    wait_until(lambda: RunLog.objects.filter(event="start").exists(), 30)
    assert pq.cancel(running) is True
    wait_until(lambda: Task.objects.get(pk=running.pk).status == "cancelled", 20)
    assert worker.process.poll() is None
