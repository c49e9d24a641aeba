"""Statements for tasks that wait for tasks: their dependencies, batches and chains.

Readiness itself is decided in the database, by the functions and triggers of migration
0006 (``pq_dependency_ended``, ``pq_settle``): the transaction that ends a task marks what
waited for it and releases what waits for nothing more. These statements only write the
structure and read it; each runs on the Django connection of ``PQ_DATABASE``, inside the
caller's transaction.
"""

from __future__ import annotations

from typing import Any

from django.db import connections

from django_pq.conf import pq_settings

STATUSES = "SELECT id, status FROM pq_tasks WHERE id = ANY(%s)"
"""(id, status) of the tasks ``%s`` that exist."""

NEW_BATCH = "INSERT INTO pq_batches (kind, created_at) VALUES (%s, now()) RETURNING id"
"""A new batch or chain (``%s`` its kind); returns its id."""

SET_CALLBACKS = """
    UPDATE pq_batches SET on_success_id = %s, on_failure_id = %s, on_finish_id = %s
    WHERE id = %s
"""
"""Name a batch's callbacks (their ids, or NULL; the batch id last)."""

ADD_DEPENDENCIES = """
    INSERT INTO pq_dependencies (task_id, depends_on_id, satisfied, is_fresh)
    SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::boolean[], %s::boolean[])
"""
"""Who waits for whom: parallel arrays of the waiting task, the task it waits for,
whether that one has already ended, and whether both were written by this call (a
dependency on a task that existed before is checked again when the transaction commits,
see ``pq_dependency_committed``)."""

BATCH_COUNTS = """
    SELECT t.status, count(*) FROM pq_tasks t JOIN pq_batches b ON b.id = t.batch_id
    WHERE t.batch_id = %s
      AND t.id IS DISTINCT FROM b.on_success_id AND t.id IS DISTINCT FROM b.on_failure_id
      AND t.id IS DISTINCT FROM b.on_finish_id
    GROUP BY t.status
"""
"""A batch's members (not its callbacks) by status (``%s`` the batch id)."""

BATCH_OF_TASK = """
    SELECT b.id FROM pq_batches b
    WHERE b.id = (SELECT batch_id FROM pq_tasks WHERE id = %s)
"""
"""The batch or chain task ``%s`` belongs to (a member or a callback), if any."""

MEMBERS_IN = """
    SELECT t.id FROM pq_tasks t JOIN pq_batches b ON b.id = t.batch_id
    WHERE t.batch_id = %s AND t.status = ANY(%s)
      AND t.id IS DISTINCT FROM b.on_success_id AND t.id IS DISTINCT FROM b.on_failure_id
      AND t.id IS DISTINCT FROM b.on_finish_id
    ORDER BY t.id
"""
"""The ids of a batch's members (``%s``) in the statuses ``%s``."""


def fetch(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    with connections[pq_settings.DATABASE].cursor() as cursor:
        cursor.execute(sql, params)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
