"""Flow control's surfaces: bad limits refused by the checks, PQ_LIMITS synced to the
database, rows a hostile writer tries refused by the schema, pq_status, the Prometheus
view, and the admin's pause and resume with permissions and history."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.core.checks import run_checks
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.test import Client, override_settings
from django.urls import reverse

import django_pq as pq
from django_pq.metrics import metrics_view
from django_pq.models import FlowKey, Limit, Task
from tests.testapp import tasks

pytestmark = pytest.mark.django_db


def check_ids(limits: Any) -> list[tuple[str, str]]:
    with override_settings(PQ_LIMITS=limits):
        return [
            (message.id or "", message.msg)
            for message in run_checks()
            if (message.id or "").startswith("django_pq.")
        ]


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"concurrency": 0}, "concurrency must be a positive whole number"),
        ({"concurrency": -1}, "positive whole number"),
        ({"concurrency": float("nan")}, "positive whole number"),
        ({"concurrency": 1.5}, "positive whole number"),
        ({"concurrency": True}, "positive whole number"),
        ({"rate": "fast"}, "rate 'fast' cannot be read"),
        ({"rate": "0/s"}, "cannot be read"),
        ({"rate": "10/d"}, "cannot be read"),
        ({"rate": 10}, "cannot be read"),
        ({"rate": "10/s", "burst": float("nan")}, "burst must be a positive number"),
        ({"rate": "10/s", "burst": 0}, "burst must be a positive number"),
        ({"burst": 5}, "burst applies to a rate"),
        ({"ordered": True, "concurrency": 2}, "drop concurrency=2"),
        ({"ordered": "yes"}, "ordered must be True or False"),
        ({"ordered": True, "on_failure": "skip"}, "on_failure must be 'hold' or 'release'"),
        ({"on_failure": "hold"}, "on_failure applies to ordered=True keys"),
        ({"concurency": 2}, "unknown option(s) 'concurency'"),
        ({}, "limits nothing"),
        ("5/s", "must be a dict"),
    ],
)
def test_a_limit_that_cannot_be_enforced_is_a_check_error_naming_the_key(options, says):
    found = check_ids({"stripe": options})
    errors = [msg for check, msg in found if check == "django_pq.E024"]
    assert errors and says in errors[0] and "PQ_LIMITS['stripe']" in errors[0], found
    with override_settings(PQ_LIMITS={"stripe": options}), pytest.raises(pq.TaskRefused):
        pq.sync_limits()
    assert not Limit.objects.exists()


def test_a_bad_pattern_and_a_bad_setting_are_check_errors():
    assert any(check == "django_pq.E024" for check, _ in check_ids({"": {"concurrency": 1}}))
    assert any(check == "django_pq.E024" for check, _ in check_ids(["stripe"]))


def test_a_pattern_no_declared_key_matches_is_a_warning():
    # tests.testapp.policy_tasks.sync_customer derives its key: any pattern may match then.
    from django_pq import declared_tasks

    saved = dict(declared_tasks._DECLARED)
    try:
        declared_tasks._DECLARED.clear()
        pq.task(limit_key="stripe")(tasks.noop)
        found = check_ids({"strpe": {"concurrency": 1}, "str*": {"concurrency": 1}})
        warnings = [msg for check, msg in found if check == "django_pq.W004"]
        assert len(warnings) == 1 and "'strpe'" in warnings[0], found
    finally:
        declared_tasks._DECLARED.clear()
        declared_tasks._DECLARED.update(saved)
        del tasks.noop.__pq_task__


def test_sync_writes_the_setting_keeps_staff_limits_and_the_setting_wins():
    Limit.objects.create(pattern="staff", concurrency=3)
    Limit.objects.create(pattern="both", concurrency=3)
    with override_settings(
        PQ_LIMITS={"both": {"concurrency": 1}, "api:*": {"rate": "100/m", "burst": 5}}
    ):
        assert pq.sync_limits() == (2, 0)
        assert pq.sync_limits() == (0, 0)  # unchanged rows are not rewritten
    api = Limit.objects.get(pattern="api:*")
    assert (api.per_second, api.burst, api.source, api.like_pattern) == (
        pytest.approx(100 / 60),
        5.0,
        "setting",
        "api:%",
    )
    assert Limit.objects.get(pattern="both").concurrency == 1
    with override_settings(PQ_LIMITS={}):
        assert pq.sync_limits() == (0, 2)
    assert set(Limit.objects.values_list("pattern", flat=True)) == {"staff"}


def test_the_schema_refuses_flow_rows_that_would_break_the_claim():
    for statement in [
        "INSERT INTO pq_flow_keys (key, tokens) VALUES ('k', 'NaN')",
        "INSERT INTO pq_flow_keys (key, version) VALUES ('k', 9223372036854775807)",
        "INSERT INTO pq_flow_keys (key, tokens_at) VALUES ('k', 'infinity')",
        "INSERT INTO pq_flow_keys (key, blocked_until) VALUES ('k', '-infinity')",
        "INSERT INTO pq_limits (pattern, per_second, burst, ordered, on_failure, source, "
        "updated_at) VALUES ('k', 1e-300, 1, false, 'hold', 'x', now())",
        "INSERT INTO pq_limits (pattern, concurrency, burst, ordered, on_failure, source, "
        "updated_at) VALUES ('k', 2, 1, true, 'hold', 'x', now())",
        "INSERT INTO pq_limits (pattern, concurrency, burst, ordered, on_failure, source, "
        "updated_at) VALUES ('k', 0, 1, false, 'hold', 'x', now())",
    ]:
        with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cur:
            cur.execute(statement)
    # The LIKE pattern is the database's: a writer cannot hand the claim one that fails.
    with (
        pytest.raises(Exception, match="like_pattern"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "INSERT INTO pq_limits (pattern, like_pattern, burst, ordered, on_failure, "
            "source, updated_at) VALUES ('k', 'k\\', 1, false, 'hold', 'x', now())"
        )


def test_a_pattern_with_like_characters_matches_only_itself():
    from django_pq.testing import run_pending_tasks

    Limit.objects.create(pattern="a_b%\\", concurrency=1)
    Limit.objects.create(pattern="x*", concurrency=1)
    assert Limit.objects.get(pattern="a_b%\\").like_pattern == "a\\_b\\%\\\\"
    pq.enqueue(tasks.add, 1, 2, limit_key="a_b%\\")
    pq.enqueue(tasks.add, 1, 2, limit_key="axb")
    assert len(run_pending_tasks(isolation="inline")) == 2


def test_pq_status_and_its_json_list_the_busy_keys():
    with override_settings(PQ_LIMITS={"api:*": {"concurrency": 2, "rate": "10/s"}}):
        pq.sync_limits()
    for _ in range(3):
        pq.enqueue(tasks.noop, limit_key="api:1")
    pq.enqueue(tasks.noop, limit_key="free")
    pq.pause_key("free")
    out = StringIO()
    with pytest.raises(SystemExit):  # no live worker
        call_command("pq_status", stdout=out)
    text = out.getvalue()
    assert "Flow keys (most waiting first)" in text
    lines = [line for line in text.splitlines() if line.startswith(("api:1", "free"))]
    assert lines[0].split()[:6] == ["api:1", "2", "at", "once,", "10/s", "(api:*)"]
    assert "unlimited" in lines[1] and "paused" in lines[1]
    out = StringIO()
    with pytest.raises(SystemExit):
        call_command("pq_status", "--json", stdout=out)
    keys = {key["key"]: key for key in json.loads(out.getvalue())["flow_keys"]}
    assert keys["api:1"]["waiting"] == 3 and keys["api:1"]["limit"] == "api:*"
    assert keys["free"]["is_paused"] and keys["free"]["limit"] is None


def test_the_prometheus_view_reports_the_keys(rf):
    pytest.importorskip("prometheus_client")
    pq.enqueue(tasks.noop, limit_key="mail")
    pq.pause_key("mail")
    body = metrics_view(rf.get("/metrics")).content.decode()
    assert 'pq_flow_key_tasks{key="mail",state="waiting"} 1.0' in body
    assert 'pq_flow_key_stopped{key="mail",reason="paused"} 1.0' in body


def test_pause_and_resume_in_the_admin_need_the_permission_and_leave_history(staff_client):
    pq.enqueue(tasks.noop, limit_key="mail")
    pq.pause_key("mail")
    pq.resume_key("mail")
    url = reverse("admin:django_pq_flowkey_changelist")
    form = {"action": "pause_keys", "_selected_action": ["mail"]}
    viewer = staff_client("view_flowkey")
    assert b"pause_keys" not in viewer.get(url).content
    viewer.post(url, form)
    assert not FlowKey.objects.get(key="mail").is_paused
    operator = staff_client("view_flowkey", "pause_flowkey")
    assert b"pause_keys" in operator.get(url).content
    operator.post(url, form)
    assert FlowKey.objects.get(key="mail").is_paused
    operator.post(url, {"action": "resume_keys", "_selected_action": ["mail"]})
    assert not FlowKey.objects.get(key="mail").is_paused
    messages = list(
        LogEntry.objects.filter(object_id="mail")
        .order_by("id")
        .values_list("change_message", flat=True)
    )
    assert messages == ["Paused from the admin.", "Resumed from the admin."]


def test_a_limit_edited_in_the_admin_is_validated_and_applies(admin_client: Client):
    url = reverse("admin:django_pq_limit_add")
    response = admin_client.post(
        url, {"pattern": "api", "rate": "fast", "burst": 1, "on_failure": "hold"}
    )
    assert b"cannot be read" in response.content and not Limit.objects.exists()
    admin_client.post(url, {"pattern": "api", "rate": "2/s", "burst": 1, "on_failure": "hold"})
    limit = Limit.objects.get(pattern="api")
    assert (limit.per_second, limit.source) == (2.0, "admin")
    assert not Task.objects.exists()


def test_the_flow_key_list_reads_every_key_s_numbers_at_once(admin_client: Client):
    from django.test.utils import CaptureQueriesContext

    with override_settings(PQ_LIMITS={"k:*": {"concurrency": 2, "rate": "5/s"}}):
        pq.sync_limits()
    url = reverse("admin:django_pq_flowkey_changelist")

    def queries_with(keys: int) -> tuple[int, bytes]:
        FlowKey.objects.bulk_create(
            [FlowKey(key=f"k:{n}") for n in range(keys)], ignore_conflicts=True
        )
        with CaptureQueriesContext(connection) as captured:
            page = admin_client.get(url)
        assert page.status_code == 200
        return len(captured), page.content

    few, _ = queries_with(2)
    many, content = queries_with(30)
    assert many == few  # not one statement per key shown
    assert content.count(b"2 at once, 5/s") == 30
