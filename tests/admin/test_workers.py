"""The workers page: live and recently dead workers, read-only, with their running tasks."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from model_bakery import baker

from django_pq.models import Status, Worker
from tests.admin.conftest import make_task

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:django_pq_worker_changelist"


def worker(**fields: object) -> Worker:
    defaults: dict[str, object] = {
        "hostname": "web-1",
        "pid": 4242,
        "concurrency": 4,
        "queues": ["mail", "default"],
        "lease_expires_at": timezone.now() + dt.timedelta(minutes=1),
    }
    return baker.make(Worker, **{**defaults, **fields})


def test_lists_live_and_recently_dead_workers(admin_client: Client) -> None:
    alive = worker(hostname="alive-host")
    lost = worker(hostname="lost-host", lease_expires_at=timezone.now() - dt.timedelta(minutes=1))
    worker(hostname="ancient-host", heartbeat_at=timezone.now() - dt.timedelta(days=3),
           lease_expires_at=timezone.now() - dt.timedelta(days=3))  # fmt: skip
    make_task(Status.RUNNING, worker_id=alive.pk)
    make_task(Status.RUNNING, worker_id=alive.pk)

    response = admin_client.get(reverse(CHANGELIST))
    rows = {w.hostname: w for w in response.context["cl"].result_list}
    assert set(rows) == {"alive-host", "lost-host"}
    assert rows["alive-host"].is_alive and not rows["lost-host"].is_alive
    assert rows["alive-host"].running_count == 2
    html = response.content.decode()
    assert "mail, default" in html
    assert f"worker={alive.pk}" in html

    alive_only = admin_client.get(reverse(CHANGELIST), {"alive": "yes"})
    assert [w.pk for w in alive_only.context["cl"].result_list] == [alive.pk]
    dead_only = admin_client.get(reverse(CHANGELIST), {"alive": "no"})
    assert [w.pk for w in dead_only.context["cl"].result_list] == [lost.pk]


def test_workers_are_read_only(admin_client: Client) -> None:
    row = worker()
    url = reverse("admin:django_pq_worker_change", args=[row.pk])
    assert admin_client.get(url).status_code == 200
    assert (
        admin_client.post(url, {"hostname": "evil", "pid": 1, "concurrency": 1}).status_code == 403
    )
    delete = reverse("admin:django_pq_worker_delete", args=[row.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert admin_client.get(reverse("admin:django_pq_worker_add")).status_code == 403
    row.refresh_from_db()
    assert row.hostname == "web-1"
