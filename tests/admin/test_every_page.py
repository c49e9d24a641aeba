"""Every admin page django-pq registers, fetched by a superuser and by a view-only user.

The pages are listed from the admin site itself (each registered django-pq model admin's
URL patterns), and the test fails on a pattern no visit reached, so a new page cannot be
left out. The rows include what a careless or hostile writer can put in the tables with
SQL: payloads nested thousands deep, an unknown time zone, a cron that never fires.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client, override_settings
from django.urls import resolve, reverse
from django.utils import timezone

import django_pq as pq
from django_pq.declared import sync_schedules
from django_pq.models import Batch, FlowKey, Limit, Periodic, Status, Task, Worker
from django_pq.schedules import pause, schedule
from tests.admin.conftest import VIEW_TASKS, make_task
from tests.testapp import tasks

pytestmark = pytest.mark.django_db

#: Filter and query values that are not what the pages offer, sent to every list.
GARBAGE = [
    "²",  # "²".isdigit() is true, int("²") raises
    "٣",
    "-1",
    "99999999999999999999",
    "1e400",
    "nan",
    "x" * 3000,
    "'\";<script>",
    " ",
    "\x00",  # PostgreSQL text cannot hold NUL: refused with 400
]

#: Too deep for json.loads on every supported Python (3.13 decodes 3,000 deep), and
#: shallow enough for PostgreSQL to store inside a payload.
DEEP = "[" * 10000 + "]" * 10000
#: Deep enough for the recursive readers after the parser (decoding, pretty-printing).
MIDDLE = '{"a": ' * 450 + "1" + "}" * 450


def sql(statement: str, *params: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


@dataclass
class Rows:
    """One row of each kind the pages must show."""

    tasks: dict[str, Task] = field(default_factory=dict)
    schedules: dict[str, Periodic] = field(default_factory=dict)
    worker: Worker | None = None
    flow_keys: list[FlowKey] = field(default_factory=list)
    limits: list[Limit] = field(default_factory=list)
    batches: dict[str, Batch] = field(default_factory=dict)


@pytest.fixture
def rows() -> Rows:
    found = Rows()
    interval = schedule(tasks.add, 1, 2, run_every=dt.timedelta(minutes=5))
    found.schedules["interval"] = interval
    found.schedules["cron"] = schedule(tasks.echo, cron="0 9 * * mon", timezone="Europe/Berlin")
    schedule(tasks.noop, run_every=dt.timedelta(hours=1), key="paused")
    found.schedules["paused"] = pause(tasks.noop, key="paused")
    with override_settings(
        PQ_SCHEDULES=[{"task": "tests.testapp.tasks.pid", "run_every": dt.timedelta(minutes=1)}]
    ):
        sync_schedules()
    found.schedules["declared"] = Periodic.objects.get(name="tests.testapp.tasks:pid")
    assert found.schedules["declared"].is_declared
    for kind, column, value in [
        ("bad time zone", "timezone", "Mars/Olympus"),
        ("never fires", "cron", "0 0 30 2 *"),
        ("invalid cron", "cron", "not a cron"),
    ]:
        row = schedule(tasks.log_run, run_every=dt.timedelta(minutes=5), key=kind)
        if column == "cron":
            sql("UPDATE pq_periodic SET run_every = NULL, cron = %s WHERE id = %s", value, row.pk)
        else:
            sql(f"UPDATE pq_periodic SET {column} = %s WHERE id = %s", value, row.pk)
        found.schedules[kind] = row
    for kind, nested in [("payload 10000 deep", DEEP), ("payload 450 deep", MIDDLE)]:
        row = schedule(tasks.echo, run_every=dt.timedelta(minutes=5), key=kind)
        payload = f'{{"args": [{nested}], "kwargs": {{}}}}'
        sql("UPDATE pq_periodic SET payload = %s::jsonb WHERE id = %s", payload, row.pk)
        found.schedules[kind] = row
    huge = schedule(tasks.log_run, run_every=dt.timedelta(minutes=5), key="huge interval")
    sql("UPDATE pq_periodic SET run_every = interval '3652056 days' WHERE id = %s", huge.pk)
    found.schedules["huge interval"] = huge
    disabled = schedule(tasks.log_run, run_every=dt.timedelta(minutes=5), key="disabled")
    sql(
        "UPDATE pq_periodic SET active = false, error = 'Disabled by a worker: <b>bad</b>' "
        "WHERE id = %s",
        disabled.pk,
    )
    found.schedules["disabled"] = disabled

    worker = Worker.objects.create(
        hostname="web-1",
        pid=4242,
        concurrency=4,
        queues=["default", "mail"],
        lease_expires_at=timezone.now() + dt.timedelta(minutes=1),
    )
    found.worker = worker
    hostile = Worker.objects.create(
        hostname="hostile", pid=1, concurrency=1, lease_expires_at=timezone.now()
    )
    sql("UPDATE pq_workers SET queues = '5', priorities = '\"x\"' WHERE id = %s", hostile.pk)

    for status in Status.values:
        found.tasks[status] = make_task(status, worker_id=worker.pk)
    found.tasks["periodic run"] = make_task(
        Status.COMPLETED, periodic=interval, slot=timezone.now(), result={"ok": True}
    )
    found.tasks["later"] = make_task(run_at=timezone.now() + dt.timedelta(hours=1))
    deep = make_task(Status.FAILED)
    sql(
        "UPDATE pq_tasks SET payload = %s::jsonb, result = %s::jsonb, requeue = %s::jsonb "
        "WHERE id = %s",
        f'{{"args": {DEEP}, "kwargs": {{}}}}',
        DEEP,
        DEEP,
        deep.pk,
    )
    found.tasks["nested 10000 deep"] = deep
    middle = make_task(Status.COMPLETED)
    sql(
        "UPDATE pq_tasks SET payload = %s::jsonb, result = %s::jsonb WHERE id = %s",
        f'{{"args": [], "kwargs": {{"a": {MIDDLE}}}}}',
        MIDDLE,
        middle.pk,
    )
    found.tasks["nested 450 deep"] = middle
    policies = make_task(Status.RUNNING, worker_id=worker.pk)
    sql(
        "UPDATE pq_tasks SET progress = %s::jsonb, retry_decision = %s::jsonb, "
        "failure_counts = %s::jsonb, retry_policy = %s::jsonb WHERE id = %s",
        DEEP,
        DEEP,
        DEEP,
        DEEP,
        policies.pk,
    )
    found.tasks["policy columns 10000 deep"] = policies
    odd = make_task(Status.RUNNING, worker_id=worker.pk)
    sql(
        "UPDATE pq_tasks SET progress = %s::jsonb, retry_decision = %s::jsonb, "
        "failure_counts = %s::jsonb, retry_policy = %s::jsonb WHERE id = %s",
        '{"done": {"x": [1]}, "total": "<b>many</b>", "message": 5}',
        '"just text"',
        "[1, 2]",
        "42",
        odd.pk,
    )
    found.tasks["policy columns of odd shapes"] = odd

    # Flow control: limits from the setting and from staff, keys in every state, with
    # the odd but allowed values a writer can leave (a key of HTML, tokens spent below 0).
    with override_settings(PQ_LIMITS={"api:*": {"concurrency": 2, "rate": "10/s"}}):
        pq.sync_limits()
    Limit.objects.create(pattern="seq:*", ordered=True, concurrency=1, on_failure="release")
    found.limits = list(Limit.objects.all())
    for key in ["api:1", "seq:1", "<b>key</b>", "idle"]:
        make_task(limit_key=key)
    make_task(Status.RUNNING, worker_id=worker.pk, limit_key="api:1")
    pq.pause_key("api:1", "<b>key</b>", "idle")
    sql(
        "INSERT INTO pq_flow_keys (key, is_held, tokens, tokens_at, blocked_until) "
        "VALUES ('seq:1', true, -5, now() - interval '1 hour', now() + interval '1 day')"
    )
    sql("UPDATE pq_flow_keys SET tokens = 0.5, tokens_at = now() WHERE key = 'api:1'")
    found.flow_keys = list(FlowKey.objects.all())

    # Batches and chains: with callbacks, and with no members left (pruned); their tasks'
    # pages show who waits for whom.
    made = pq.batch(
        [pq.prepare(tasks.add, n, 1) for n in range(3)],
        on_success=pq.prepare(tasks.noop),
        on_failure=pq.prepare(tasks.noop),
        on_finish=pq.prepare(tasks.noop),
    )
    found.batches["batch"] = Batch.objects.get(pk=made.id)
    steps = pq.chain(pq.prepare(tasks.add, 1, 2), pq.prepare(tasks.add, 10), pass_result=True)
    found.batches["chain"] = Batch.objects.get(pk=steps[0].batch_id)
    Task.objects.filter(pk=made.tasks[0].pk).update(status=Status.FAILED, error_code="exception")
    for task in [*made.tasks, *steps, made.on_success]:
        assert task is not None
        task.refresh_from_db()
        found.tasks[f"in a batch #{task.pk}"] = task
    sql("INSERT INTO pq_batches (kind, created_at) VALUES ('batch', now())")
    sql("INSERT INTO pq_batches (kind, created_at) VALUES ('chain', now())")
    for batch in Batch.objects.filter(tasks__isnull=True):
        found.batches[f"empty #{batch.pk}"] = batch
    return found


@dataclass
class Visitor:
    """A logged-in client that records the route of every page it fetched."""

    client: Client
    routes: set[str]

    def get(self, url: str, *expected: int, **params: str) -> Any:
        response = self.client.get(url, params)
        self.routes.add(resolve(url).route)
        assert response.status_code in expected, (url, params, response.status_code)
        return response

    def post(self, url: str, data: dict[str, Any], *expected: int) -> Any:
        response = self.client.post(url, data)
        self.routes.add(resolve(url).route)
        assert response.status_code in expected, (url, data, response.status_code)
        return response


def registered_routes() -> set[str]:
    """The route of every URL pattern the admin site serves for django-pq's models."""
    prefix = resolve(reverse("admin:index")).route
    routes = set()
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label != "django_pq":
            continue
        base = f"{prefix}{model._meta.app_label}/{model._meta.model_name}/"
        routes.update(base + str(pattern.pattern) for pattern in model_admin.get_urls())
    return routes


def filter_links(visitor: Visitor, url: str) -> Iterator[str]:
    """Every choice of every filter the list page offers, as the query string it links."""
    response = visitor.get(url, 200)
    changelist = response.context["cl"]
    for spec in changelist.filter_specs:
        for choice in spec.choices(changelist):
            yield choice["query_string"]


def filter_parameters(visitor: Visitor, url: str) -> set[str]:
    response = visitor.get(url, 200)
    names = {"q", "o", "p", "e", "all"}
    for spec in response.context["cl"].filter_specs:
        names.update(spec.expected_parameters())
    return names


def visit_everything(visitor: Visitor, rows: Rows, *, superuser: bool) -> None:
    ok, forbidden = (200,), (403,)
    visitor.get(reverse("admin:index"), 200)
    visitor.get(reverse("admin:app_list", args=["django_pq"]), 200)
    for model in ("task", "periodic", "worker"):
        url = reverse(f"admin:django_pq_{model}_changelist")
        for query in filter_links(visitor, url):
            visitor.get(url + query, 200)
        # Tasks and workers are never added by hand; schedules by those who may add them.
        may_add = superuser and model == "periodic"
        visitor.get(reverse(f"admin:django_pq_{model}_add"), *(ok if may_add else forbidden))
    visitor.get(reverse("admin:django_pq_overview"), 200)
    for model in ("flowkey", "limit", "batch"):
        url = reverse(f"admin:django_pq_{model}_changelist")
        for query in filter_links(visitor, url):
            visitor.get(url + query, 200)
        may_add = superuser and model == "limit"
        visitor.get(reverse(f"admin:django_pq_{model}_add"), *(ok if may_add else forbidden))
    for model, objects in (
        ("flowkey", rows.flow_keys),
        ("limit", rows.limits),
        ("batch", list(rows.batches.values())),
    ):
        for row in objects:
            visitor.get(reverse(f"admin:django_pq_{model}_change", args=[row.pk]), 200)
            visitor.get(reverse(f"admin:django_pq_{model}_history", args=[row.pk]), 200)
            # Batches are never deleted by hand: pruning deletes them with their tasks.
            may_delete = superuser and model != "batch"
            visitor.get(
                reverse(f"admin:django_pq_{model}_delete", args=[row.pk]),
                *(ok if may_delete else forbidden),
            )
            visitor.get(f"{reverse(f'admin:django_pq_{model}_changelist')}{row.pk}/", 302)

    for task in rows.tasks.values():
        visitor.get(reverse("admin:django_pq_task_change", args=[task.pk]), 200)
        visitor.get(reverse("admin:django_pq_task_history", args=[task.pk]), 200)
        may_delete = superuser and task.is_finished
        visitor.get(
            reverse("admin:django_pq_task_delete", args=[task.pk]),
            *(ok if may_delete else forbidden),
        )
        visitor.get(f"{reverse('admin:django_pq_task_changelist')}{task.pk}/", 302)
    for periodic in rows.schedules.values():
        visitor.get(reverse("admin:django_pq_periodic_change", args=[periodic.pk]), 200)
        visitor.get(reverse("admin:django_pq_periodic_history", args=[periodic.pk]), 200)
        may_delete = superuser and not periodic.is_declared
        visitor.get(
            reverse("admin:django_pq_periodic_delete", args=[periodic.pk]),
            *(ok if may_delete else forbidden),
        )
        visitor.get(f"{reverse('admin:django_pq_periodic_changelist')}{periodic.pk}/", 302)
    assert rows.worker is not None
    visitor.get(reverse("admin:django_pq_worker_change", args=[rows.worker.pk]), 200)
    visitor.get(reverse("admin:django_pq_worker_history", args=[rows.worker.pk]), 200)
    visitor.get(reverse("admin:django_pq_worker_delete", args=[rows.worker.pk]), 403)
    visitor.get(f"{reverse('admin:django_pq_worker_changelist')}{rows.worker.pk}/", 302)

    preview = reverse("admin:django_pq_periodic_preview")
    for timing in [
        {"timing": "interval", "every": "5", "unit": "minutes"},
        {"timing": "cron", "cron": "0 9 * * mon", "timezone": "Europe/Berlin"},
        {"timing": "cron", "cron": "0 0 30 2 *"},
        {"timing": "interval", "every": "99999999999", "unit": "days"},
        {"timing": "cron", "cron": "0 9 * * mon", "timezone": "Mars/Olympus"},
    ]:
        visitor.get(preview, 200, **timing)

    # The confirmation page of the one action that asks first (Django's delete_selected).
    finished = [rows.tasks[Status.COMPLETED].pk, rows.tasks[Status.FAILED].pk]
    confirm = {"action": "delete_selected", "_selected_action": finished, "index": 0}
    response = visitor.post(reverse("admin:django_pq_task_changelist"), confirm, 200)
    # A view-only user is offered no action: the list comes back, nothing deleted.
    assert (b"Are you sure you want to delete" in response.content) == superuser
    assert Task.objects.filter(pk__in=finished).count() == 2


@pytest.mark.parametrize("who", ["superuser", "view-only staff"])
def test_every_admin_page_answers_without_a_server_error(
    who: str, rows: Rows, staff_client: Any
) -> None:
    if who == "superuser":
        client = Client()
        client.force_login(User.objects.create_superuser("root", password="pw"))
    else:
        client = staff_client(*VIEW_TASKS)
    visitor = Visitor(client, set())
    visit_everything(visitor, rows, superuser=who == "superuser")
    unvisited = registered_routes() - visitor.routes
    assert not unvisited, f"admin pages no test fetches: {sorted(unvisited)}"


def test_garbage_in_any_query_parameter_is_not_a_server_error(
    rows: Rows, admin_client: Client
) -> None:
    visitor = Visitor(admin_client, set())
    for model in ("task", "periodic", "worker", "flowkey", "limit", "batch"):
        url = reverse(f"admin:django_pq_{model}_changelist")
        for name in sorted(filter_parameters(visitor, url)):
            for value in GARBAGE:
                # A lookup Django cannot apply redirects to ?e=1; NUL is refused with 400.
                visitor.get(url, *((400,) if "\x00" in value else (200, 302)), **{name: value})


def test_a_paused_schedule_shows_no_next_run_and_times_share_one_format(
    rows: Rows, admin_client: Client
) -> None:
    interval = rows.schedules["interval"]
    sql("UPDATE pq_periodic SET last_run = now() - interval '5 minutes' WHERE id = %s", interval.pk)
    html = admin_client.get(reverse("admin:django_pq_periodic_changelist")).content.decode()
    row_of = {
        kind: html.split(f"/periodic/{periodic.pk}/change/")[1].split("</tr>")[0]
        for kind, periodic in rows.schedules.items()
    }
    assert 'class="field-next_run_text">paused<' in row_of["paused"]
    interval.refresh_from_db()
    assert interval.next_run is not None and interval.last_run is not None
    for moment in (interval.next_run, interval.last_run):
        assert f"{moment:%Y-%m-%d %H:%M:%S} UTC" in row_of["interval"]


def test_the_admin_index_links_the_overview(admin_client: Client, staff_client: Any) -> None:
    overview = reverse("admin:django_pq_overview")
    for client in (admin_client, staff_client(*VIEW_TASKS)):
        html = client.get(reverse("admin:index")).content.decode()
        assert f'<a href="{overview}">Overview</a>' in html
    html = staff_client("view_periodic").get(reverse("admin:index")).content.decode()
    assert overview not in html  # without the task view permission, the page would be 403


def test_a_deep_payload_shows_as_stored_text(rows: Rows, admin_client: Client) -> None:
    task = rows.tasks["nested 10000 deep"]
    html = admin_client.get(reverse("admin:django_pq_task_change", args=[task.pk])).content
    assert b"nested too deeply to decode" in html
    assert b"[[[[[[" in html
    # A schedule's too: read-only for a declared one, in its form otherwise, where a save is
    # refused rather than replacing the arguments.
    periodic = rows.schedules["payload 10000 deep"]
    url = reverse("admin:django_pq_periodic_change", args=[periodic.pk])
    assert b"nested too deeply to decode" in admin_client.get(url).content
    Periodic.objects.filter(pk=periodic.pk).update(is_declared=True)
    assert b"nested too deeply to decode" in admin_client.get(url).content


def test_a_schedule_no_worker_can_fire_says_why_on_its_page(
    rows: Rows, admin_client: Client
) -> None:
    for kind, reason in [
        ("bad time zone", "Unknown time zone &#x27;Mars/Olympus&#x27;"),
        ("never fires", "never fires"),
    ]:
        url = reverse("admin:django_pq_periodic_change", args=[rows.schedules[kind].pk])
        assert reason in admin_client.get(url).content.decode(), kind
