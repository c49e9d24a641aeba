"""The batch and chain pages: who may see them and act on them, what the actions change
and record, the links between a task and what it waits for, and bounded queries."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

import django_pq as pq
from django_pq.admin.batches import MEMBERS_SHOWN
from django_pq.admin.tasks import DEPENDENCIES_SHOWN
from django_pq.dependencies import BatchHandle
from django_pq.models import Batch, Status, Task
from tests.admin.conftest import VIEW_TASKS, make_task, messages_of, post_action
from tests.testapp import tasks

pytestmark = pytest.mark.django_db


def make_batch(size: int = 3) -> BatchHandle:
    return pq.batch(
        [pq.prepare(tasks.add, n, 1) for n in range(size)],
        on_success=pq.prepare(tasks.noop),
        on_failure=pq.prepare(tasks.echo, "failed"),
        on_finish=pq.prepare(tasks.log_run, "finished"),
    )


def page_url(batch_id: int) -> str:
    return reverse("admin:django_pq_batch_change", args=[batch_id])


def statuses(*task_ids: int) -> list[str]:
    found = dict(Task.objects.filter(pk__in=task_ids).values_list("pk", "status"))
    return [found[pk] for pk in task_ids]


def member_ids(made: BatchHandle) -> list[int]:
    return [task.pk for task in made.tasks]


def set_status(task_ids: list[int], status: str, error_code: str = "") -> None:
    Task.objects.filter(pk__in=task_ids).update(status=status, error_code=error_code)


def page_buttons(html: str) -> list[str]:
    return re.findall(r'name="action" value="(\w+)"', html)


# -- seeing ----------------------------------------------------------------------------


def test_view_only_staff_sees_the_list_and_the_page_without_actions(
    staff_client: Callable[..., Client],
) -> None:
    made = make_batch()
    set_status(member_ids(made)[:1], Status.COMPLETED)
    set_status(member_ids(made)[1:2], Status.FAILED, "exception")
    client = staff_client(*VIEW_TASKS)

    listing = client.get(reverse("admin:django_pq_batch_changelist"))
    assert listing.status_code == 200
    html = listing.content.decode()
    assert page_url(made.id) in html
    assert "2 of 3 ended" in html  # the callbacks are not members
    assert "action-checkbox" not in html and 'name="action"' not in html

    page = client.get(page_url(made.id))
    assert page.status_code == 200
    html = page.content.decode()
    assert "2 of 3 ended" in html
    for task in made.tasks:
        assert reverse("admin:django_pq_task_change", args=[task.pk]) in html
    for callback in (made.on_success, made.on_failure, made.on_finish):
        assert callback is not None
        assert reverse("admin:django_pq_task_change", args=[callback.pk]) in html
    assert '<span title="the task raised an exception">exception</span>' in html
    assert page_buttons(html) == []  # nothing offered without the task permissions


def test_the_page_offers_the_actions_that_fit_to_those_who_may(
    staff_client: Callable[..., Client],
) -> None:
    made = make_batch()
    html = staff_client(*VIEW_TASKS, "cancel_task", "retry_task").get(page_url(made.id))
    assert page_buttons(html.content.decode()) == ["cancel_batches"]  # nothing failed yet
    set_status(member_ids(made)[:1], Status.FAILED, "exception")
    html = staff_client(*VIEW_TASKS, "cancel_task", "retry_task").get(page_url(made.id))
    assert page_buttons(html.content.decode()) == ["cancel_batches", "retry_batches"]
    html = staff_client(*VIEW_TASKS, "retry_task").get(page_url(made.id))
    assert page_buttons(html.content.decode()) == ["retry_batches"]
    set_status(member_ids(made), Status.COMPLETED)
    html = staff_client(*VIEW_TASKS, "cancel_task", "retry_task").get(page_url(made.id))
    assert page_buttons(html.content.decode()) == []


def test_staff_who_may_not_view_tasks_may_not_view_batches(
    staff_client: Callable[..., Client],
) -> None:
    made = make_batch()
    client = staff_client("view_periodic")
    assert client.get(page_url(made.id)).status_code == 403
    assert client.get(reverse("admin:django_pq_batch_changelist")).status_code == 403
    # Django's own view permission on batches is enough for the batch pages.
    assert staff_client("view_batch").get(page_url(made.id)).status_code == 200


def test_batches_are_read_only(admin_client: Client) -> None:
    made = make_batch()
    assert admin_client.get(reverse("admin:django_pq_batch_add")).status_code == 403
    delete = reverse("admin:django_pq_batch_delete", args=[made.id])
    assert admin_client.get(delete).status_code == 403
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    response = admin_client.post(page_url(made.id), {"kind": "chain"})
    assert response.status_code == 403
    assert Batch.objects.get(pk=made.id).kind == "batch"
    html = admin_client.get(reverse("admin:django_pq_batch_changelist")).content.decode()
    assert "delete_selected" not in html


def test_a_chain_s_page_shows_its_steps(admin_client: Client) -> None:
    steps = pq.chain(pq.prepare(tasks.add, 1, 2), pq.prepare(tasks.add, 10), pass_result=True)
    html = admin_client.get(page_url(steps[0].batch_id)).content.decode()
    assert "chain" in html and "0 of 2 ended" in html
    callbacks = html.split("Callbacks")[1].split("Members")[0]
    assert callbacks.count('<div class="readonly">none</div>') == 3  # a chain has none
    for step in steps:
        assert reverse("admin:django_pq_task_change", args=[step.pk]) in html


def test_a_big_batch_lists_its_first_members_and_links_the_rest(admin_client: Client) -> None:
    made = pq.batch([pq.prepare(tasks.noop) for _ in range(MEMBERS_SHOWN + 5)])
    html = admin_client.get(page_url(made.id)).content.decode()
    table = html.split('class="pq-batch-members"')[1].split("</table>")[0]
    assert table.count("<tr>") == MEMBERS_SHOWN + 1  # the header row, then the members
    assert f"The first {MEMBERS_SHOWN} of {MEMBERS_SHOWN + 5} members" in html
    all_of_them = f"{reverse('admin:django_pq_task_changelist')}?batch={made.id}"
    assert all_of_them in html
    listing = admin_client.get(all_of_them)
    assert listing.status_code == 200
    assert listing.context["cl"].result_count == MEMBERS_SHOWN + 5


# -- acting ----------------------------------------------------------------------------


def batch_entries(batch_id: int) -> list[tuple[str, int, str]]:
    content_type = ContentType.objects.get_for_model(Batch)
    return list(
        LogEntry.objects.filter(content_type=content_type, object_id=str(batch_id))
        .order_by("pk")
        .values_list("user__username", "action_flag", "change_message")
    )


def task_entries(task_ids: list[int]) -> list[tuple[str, str]]:
    content_type = ContentType.objects.get_for_model(Task)
    return list(
        LogEntry.objects.filter(content_type=content_type, object_id__in=map(str, task_ids))
        .order_by("pk")
        .values_list("object_id", "change_message")
    )


@pytest.mark.parametrize(
    ("action", "codename", "other"),
    [
        ("cancel_batches", "cancel_task", "retry_task"),
        ("retry_batches", "retry_task", "cancel_task"),
    ],
)
def test_each_action_is_refused_without_its_permission(
    staff_client: Callable[..., Client], action: str, codename: str, other: str
) -> None:
    made = make_batch()
    ids = member_ids(made)
    set_status(ids[:1], Status.FAILED, "exception")
    before = statuses(*ids)

    for client in (staff_client(*VIEW_TASKS), staff_client(*VIEW_TASKS, other)):
        response = post_action(client, "batch", action, [Batch(pk=made.id)], _pq_batch_page="1")
        assert response.status_code == 200
        assert statuses(*ids) == before, "the action ran without its permission"
    assert not LogEntry.objects.exists()

    post_action(staff_client(*VIEW_TASKS, codename), "batch", action, [Batch(pk=made.id)])
    assert statuses(*ids) != before


def test_cancel_from_the_page_cancels_what_has_not_ended_and_records_it(
    staff_client: Callable[..., Client],
) -> None:
    made = make_batch(4)
    done, failed, running, pending = member_ids(made)
    set_status([done], Status.COMPLETED)
    set_status([failed], Status.FAILED, "exception")
    Task.objects.filter(pk=running).delete()
    running = make_task(Status.RUNNING, batch_id=made.id).pk
    client = staff_client(*VIEW_TASKS, "cancel_task", enforce_csrf_checks=True)

    # The page's form, as a browser sends it: without its CSRF token it is refused.
    html = client.get(page_url(made.id)).content.decode()
    form = html.split('value="cancel_batches"')[0].rsplit("<form", 1)[1]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert token is not None
    fields = {
        "action": "cancel_batches",
        "_selected_action": str(made.id),
        "_pq_batch_page": "1",
        "index": "0",
    }
    changelist = reverse("admin:django_pq_batch_changelist")
    assert client.post(changelist, fields).status_code == 403
    assert statuses(pending) == [Status.PENDING]

    response = client.post(changelist, {**fields, "csrfmiddlewaretoken": token[1]})
    assert response.status_code == 302 and response.url == page_url(made.id)
    assert statuses(done, failed, running, pending) == [
        Status.COMPLETED, Status.FAILED, Status.RUNNING, Status.CANCELLED,
    ]  # fmt: skip
    assert Task.objects.get(pk=running).is_cancel_requested
    followed = client.get(response.url)
    assert messages_of(followed) == [
        f"Cancelled 1 task; asked workers to stop 1 task running of batch #{made.id}."
    ]
    user = followed.wsgi_request.user.get_username()
    assert batch_entries(made.id) == [
        (user, CHANGE, "Cancelled its members from the admin (2 tasks).")
    ]
    message = f"Cancelled from the admin, with its batch #{made.id}."
    assert task_entries([done, failed, running, pending]) == [
        (str(pending), message),
        (str(running), message),  # made last, so the highest id
    ]


def test_retry_puts_failed_and_cancelled_members_back_and_records_it(
    admin_client: Client,
) -> None:
    made = make_batch(3)
    failed, cancelled, done = member_ids(made)
    set_status([failed], Status.FAILED, "exception")
    set_status([cancelled], Status.CANCELLED, "cancelled")
    set_status([done], Status.COMPLETED)

    response = post_action(admin_client, "batch", "retry_batches", [Batch(pk=made.id)])
    assert statuses(failed, cancelled, done) == [Status.PENDING, Status.PENDING, Status.COMPLETED]
    assert messages_of(response) == [f"Retried 2 tasks of batch #{made.id}."]
    assert batch_entries(made.id) == [
        ("admin", CHANGE, "Retried its failed members from the admin (2 tasks).")
    ]
    message = f"Retried from the admin, with its batch #{made.id}."
    assert task_entries([failed, cancelled, done]) == [
        (str(failed), message),
        (str(cancelled), message),
    ]

    # Again: nothing left to retry, nothing recorded.
    response = post_action(admin_client, "batch", "retry_batches", [Batch(pk=made.id)])
    assert messages_of(response) == [
        f"Nothing to do: no member of batch #{made.id} failed or was cancelled."
    ]
    assert len(batch_entries(made.id)) == 1


def test_the_list_acts_on_several_batches_at_once(admin_client: Client) -> None:
    first, second = make_batch(2), make_batch(1)
    response = post_action(
        admin_client, "batch", "cancel_batches", [Batch(pk=first.id), Batch(pk=second.id)]
    )
    assert response.redirect_chain[-1][0] == reverse("admin:django_pq_batch_changelist")
    assert set(statuses(*member_ids(first), *member_ids(second))) == {Status.CANCELLED}
    assert messages_of(response) == ["Cancelled 3 tasks of 2 batches and chains."]


# -- the task's page -------------------------------------------------------------------


def task_page(client: Client, task_id: int) -> str:
    response = client.get(reverse("admin:django_pq_task_change", args=[task_id]))
    assert response.status_code == 200
    return str(response.content.decode())


def test_a_task_s_page_links_its_batch_and_who_waits_for_whom(
    staff_client: Callable[..., Client],
) -> None:
    made = make_batch(2)
    first, second = made.tasks
    assert made.on_success is not None and made.on_finish is not None
    set_status([first.pk], Status.COMPLETED)
    client = staff_client(*VIEW_TASKS)

    html = task_page(client, first.pk)
    assert f'<a href="{page_url(made.id)}">batch #{made.id}</a> (member)' in html
    waited = html.split("field-waited_for_by")[1].split("</div>")[0]
    for callback in (made.on_success, made.on_failure, made.on_finish):
        assert callback is not None
        assert reverse("admin:django_pq_task_change", args=[callback.pk]) in waited
    assert "No task: it runs when its turn comes." in html

    html = task_page(client, made.on_success.pk)
    assert f"batch #{made.id}</a> (its on_success callback)" in html
    waits = html.split("field-waits_for")[1].split("</div>")[0]
    for member in (first, second):
        assert reverse("admin:django_pq_task_change", args=[member.pk]) in waits
    assert "completed</span> satisfied" in waits
    assert "pending</span> not satisfied yet" in waits

    alone = make_task()
    html = task_page(client, alone.pk)
    assert "field-batch_link" in html and "No task." in html


def test_a_task_waiting_for_many_lists_the_first_and_counts_the_rest(
    admin_client: Client,
) -> None:
    many = [pq.enqueue(tasks.noop) for _ in range(DEPENDENCIES_SHOWN + 3)]
    waiting = pq.enqueue(tasks.noop, after=many)
    assert Task.objects.get(pk=waiting.pk).status == Status.BLOCKED
    html = task_page(admin_client, waiting.pk)
    waits = html.split("field-waits_for")[1].split("</div>")[0]
    assert waits.count("<li>") == DEPENDENCIES_SHOWN + 1
    assert "and 3 more" in waits
    assert "not satisfied yet" in waits
    html = task_page(admin_client, many[0].pk)
    assert reverse("admin:django_pq_task_change", args=[waiting.pk]) in html


def test_the_task_list_filters_by_blocked(admin_client: Client) -> None:
    made = make_batch(1)
    url = reverse("admin:django_pq_task_changelist")
    html = admin_client.get(url).content.decode()
    assert "?status__exact=blocked" in html
    response = admin_client.get(url, {"status__exact": "blocked"})
    shown = {task.pk for task in response.context["cl"].result_list}
    callbacks = {task.pk for task in (made.on_success, made.on_failure, made.on_finish) if task}
    assert shown == callbacks


# -- bounded queries -------------------------------------------------------------------


def list_queries(client: Client) -> int:
    url = reverse("admin:django_pq_batch_changelist")
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


def page_queries(client: Client, batch_id: int) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(page_url(batch_id))
    assert response.status_code == 200
    return len(queries)


def test_the_list_s_queries_do_not_grow_with_its_rows(admin_client: Client) -> None:
    make_batch(2)
    list_queries(admin_client)  # the first request also fills Django's caches
    one = list_queries(admin_client)
    for _ in range(19):
        make_batch(3)
    twenty = list_queries(admin_client)
    assert twenty == one, f"{one} queries for 1 batch, {twenty} for 20"
    # Session and user, the table's size and its count, the page, the page's counts.
    assert one == 2 + 2 + 1 + 1


def test_the_page_s_queries_do_not_grow_with_its_members(admin_client: Client) -> None:
    small = make_batch(2)
    big = make_batch(60)
    page_queries(admin_client, small.id)  # the first request also fills Django's caches
    queries = page_queries(admin_client, small.id)
    assert page_queries(admin_client, big.id) == queries
    # Session and user, the no-worker banner, the batch, its counts, its callbacks, its
    # first members.
    assert queries == 2 + 1 + 1 + 1 + 1 + 1
