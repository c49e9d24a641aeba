"""A schedule a worker disabled shows its error in the admin, and resuming it there either
clears the error or says why it cannot."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils.html import escape
from model_bakery import baker

from django_pq.models import Periodic
from tests.admin.conftest import messages_of, post_action

pytestmark = pytest.mark.django_db

ERROR = "cron '0 0 30 2 *' never fires after 2026-12-02. Fix the schedule, then resume it."


def disabled(cron: str, **fields: object) -> Periodic:
    fields = {"name": "tests.testapp.tasks:noop", **fields}
    return baker.make(
        Periodic, cron=cron, run_every=None, timezone="UTC", active=False, error=ERROR, **fields
    )


def test_the_error_is_on_the_list_and_the_page(admin_client):
    periodic = disabled("0 0 30 2 *")
    listing = admin_client.get(reverse("admin:django_pq_periodic_changelist"))
    assert listing.status_code == 200 and escape(ERROR) in listing.text
    page = admin_client.get(reverse("admin:django_pq_periodic_change", args=[periodic.pk]))
    assert page.status_code == 200 and escape(ERROR) in page.text


def test_resuming_a_still_invalid_schedule_says_why_and_keeps_it_disabled(admin_client):
    periodic = disabled("0 0 30 2 *")
    response = post_action(admin_client, "periodic", "resume_schedules", [periodic])
    assert response.status_code == 200
    assert any("cannot be resumed" in m and "never fires" in m for m in messages_of(response))
    periodic.refresh_from_db()
    assert not periodic.active and periodic.error == ERROR


def test_resuming_a_fixed_schedule_clears_the_error(admin_client):
    periodic = disabled("0 9 * * *")
    response = post_action(admin_client, "periodic", "resume_schedules", [periodic])
    assert "Resumed 1 schedule." in messages_of(response)
    periodic.refresh_from_db()
    assert periodic.active and periodic.error == ""


def test_saving_it_fixed_and_active_clears_the_error(admin_client):
    from tests.admin.test_periodic import form_data

    periodic = disabled("0 0 30 2 *", name="tests.testapp.tasks:add", payload={"args": [1, 2]})
    url = reverse("admin:django_pq_periodic_change", args=[periodic.pk])
    fixed = form_data(timing="cron", cron="0 9 * * *", every="", unit="minutes")
    assert admin_client.post(url, fixed).status_code == 302
    periodic.refresh_from_db()
    assert (periodic.active, periodic.cron, periodic.error) == (True, "0 9 * * *", "")
