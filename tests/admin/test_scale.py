"""The admin stays fast on a big table: pinned query counts, no COUNT(*), index plans."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_pq.admin.paginator import EXACT_COUNT_MAX_BYTES, table_bytes
from django_pq.models import Status, Task
from tests.admin.bulk import fill_tasks
from tests.admin.conftest import make_task

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

#: Enough rows that the planner prefers indexes, and a table above the exact-count size.
BIG = 60_000

# Queries on every admin page for a superuser: session, user.
AUTH = 2


@pytest.fixture
def big_table() -> None:
    with connection.cursor() as cursor:
        fill_tasks(cursor, BIG)
    assert table_bytes(Task.objects.all()) > EXACT_COUNT_MAX_BYTES


def queries_of(client: Client, url: str, params: dict[str, str] | None = None) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, params or {})
    assert response.status_code == 200
    return [query["sql"] for query in captured.captured_queries]


def the_list_query(queries: list[str]) -> str:
    """The changelist's page query: the one that reads task rows with a LIMIT."""
    (found,) = [
        sql for sql in queries
        if sql.startswith('SELECT "pq_tasks"."id"') and "LIMIT" in sql and "COUNT" not in sql
    ]  # fmt: skip
    return found


def plan(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
        return json.dumps(cursor.fetchone()[0])


# Task changelist: the banner's EXISTS, the table's size and the count estimate (EXPLAIN)
# or exact count, the page, and the
# filters' choices (task names by index, schedules, known queues: schedules' + workers',
# live workers).
TASK_LIST_QUERIES = AUTH + 1 + 2 + 1 + 1 + 1 + 2 + 1


def test_task_changelist_query_count_is_pinned(admin_client: Client, big_table: None) -> None:
    queries = queries_of(admin_client, reverse("admin:django_pq_task_changelist"))
    assert len(queries) == TASK_LIST_QUERIES, "\n".join(queries)


def test_a_small_table_is_counted_exactly(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file of pq_tasks keeps its size after other tests' rolled-back rows, so say
    # outright what "small" is here.
    monkeypatch.setattr("django_pq.admin.paginator.EXACT_COUNT_MAX_BYTES", 1 << 40)
    make_task(Status.FAILED)
    queries = queries_of(admin_client, reverse("admin:django_pq_task_changelist"))
    # On a small table the paginator counts exactly instead of asking EXPLAIN.
    assert len(queries) == TASK_LIST_QUERIES, "\n".join(queries)
    assert any("COUNT(*)" in sql for sql in queries), "\n".join(queries)


@pytest.mark.parametrize("status", [None, *Status.values])
def test_big_lists_run_no_count_and_use_indexes(
    admin_client: Client, big_table: None, status: str | None
) -> None:
    params = {"status__exact": status} if status else {}
    queries = queries_of(admin_client, reverse("admin:django_pq_task_changelist"), params)
    assert not [sql for sql in queries if "COUNT(" in sql.upper()], "a COUNT ran on a big table"
    page_plan = plan(the_list_query(queries))
    assert "Seq Scan" not in page_plan, page_plan
    assert "Index" in page_plan, page_plan


def test_the_estimate_is_close(admin_client: Client, big_table: None) -> None:
    response = admin_client.get(reverse("admin:django_pq_task_changelist"))
    assert response.context["cl"].paginator.is_estimated
    count = response.context["cl"].result_count
    assert abs(count - BIG) / BIG < 0.1


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # The overview's one snapshot statement (the banner's liveness included).
        ("admin:django_pq_overview", AUTH + 1),
        # Banner, filtered and full count (a small table), page (with the latest run as
        # subqueries), filter choices (queues).
        ("admin:django_pq_periodic_changelist", AUTH + 1 + 2 + 1 + 1),
        # The small workers table is counted exactly (filtered and full count), the page
        # (running counts as a subquery), the hostname filter's choices.
        ("admin:django_pq_worker_changelist", AUTH + 2 + 1 + 1),
    ],
)
def test_other_pages_query_counts_are_pinned(
    admin_client: Client, big_table: None, url: str, expected: int
) -> None:
    queries = queries_of(admin_client, reverse(url))
    assert len(queries) == expected, "\n".join(queries)


def test_overview_reads_through_indexes(admin_client: Client, big_table: None) -> None:
    queries = queries_of(admin_client, reverse("admin:django_pq_overview"))
    for sql in queries:
        if "pq_tasks" in sql:
            assert "Seq Scan on pq_tasks" not in plan(sql), sql
