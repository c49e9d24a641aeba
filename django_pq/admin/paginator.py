"""A changelist paginator that does not ``COUNT(*)`` a table of millions of rows.

Django's changelist asks its paginator for the number of matching rows to draw the page
links. On ``pq_tasks`` an exact count reads every matching row (and, when the filter has
no index of its own, every row of the table), so on a big table it is the slowest query of
the page. PostgreSQL's planner already knows roughly how many rows a query returns (from
``pg_class.reltuples`` and the column statistics), so on a big table the paginator asks
``EXPLAIN`` instead; on a small table it counts exactly, which is cheap whatever the filter.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.core.exceptions import EmptyResultSet
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.utils.functional import cached_property

if TYPE_CHECKING:
    _Paginator = Paginator[Any]
else:
    # Django's Paginator is generic only in django-stubs.
    _Paginator = Paginator

#: Tables up to this size on disk are counted exactly (a few milliseconds at most).
EXACT_COUNT_MAX_BYTES = 8 * 1024 * 1024


def table_bytes(queryset: QuerySet[Any]) -> int:
    """The size on disk of the queryset's table (its main fork: a file size, no scan)."""
    with connections[queryset.db].cursor() as cursor:
        cursor.execute("SELECT pg_relation_size(%s::regclass)", [queryset.model._meta.db_table])
        return int(cursor.fetchone()[0])


def planner_estimate(queryset: QuerySet[Any]) -> int:
    """The number of rows PostgreSQL's planner expects ``queryset`` to return (one EXPLAIN)."""
    try:
        sql, params = queryset.order_by().query.get_compiler(using=queryset.db).as_sql()
    except EmptyResultSet:
        return 0
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        raw = cursor.fetchone()[0]
    plan = json.loads(raw) if isinstance(raw, str) else raw
    return int(plan[0]["Plan"]["Plan Rows"])


class EstimatedCountPaginator(_Paginator):
    """Counts exactly on a small table, and trusts the planner's estimate on a big one.

    An estimate can be off, so the last page links may lead to a short or empty page;
    that is the price of a changelist that opens in milliseconds on any table size.
    """

    @cached_property
    def _counted(self) -> tuple[int, bool]:
        object_list = self.object_list
        if not isinstance(object_list, QuerySet):
            return len(object_list), False
        if table_bytes(object_list) <= EXACT_COUNT_MAX_BYTES:
            return object_list.count(), False
        return planner_estimate(object_list), True

    @cached_property
    def count(self) -> int:
        """The number of matching rows: exact on a small table, estimated on a big one."""
        return self._counted[0]

    @property
    def is_estimated(self) -> bool:
        """Whether :attr:`count` is the planner's estimate rather than an exact count."""
        return self._counted[1]
