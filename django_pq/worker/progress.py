"""Writing a running task's progress from its child: a connection of the child's own.

``pq.set_progress()`` must never touch the task's transaction (a task that rolls back
would roll its progress back too, and one that holds a transaction open would hide it),
so the child opens one more connection, in autocommit, the first time the task reports
progress, and closes it when the task ends.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.db import connections

from django_pq.conf import pq_settings
from django_pq.store.tasks import SET_PROGRESS

logger = logging.getLogger("django_pq.worker")


class OwnConnectionWriter:
    """Writes one task's progress through a connection of its own (opened lazily)."""

    def __init__(self, task_id: int, run_token: str) -> None:
        self.task_id, self.run_token = task_id, run_token
        self.conn: Any = None
        self.failed = False

    def __call__(self, progress: dict[str, object]) -> bool:
        if self.failed:
            return False
        try:
            if self.conn is None:
                import psycopg

                params = connections[pq_settings.DATABASE].get_connection_params()
                self.conn = psycopg.connect(**params, autocommit=True)
            params = {"progress": json.dumps(progress), "id": self.task_id}
            rows = self.conn.execute(SET_PROGRESS, {**params, "run_token": self.run_token})
            return rows.fetchone() is not None
        except Exception:
            # Progress is a courtesy: a failure to write it is logged once and never
            # fails the task.
            self.failed = True
            logger.warning("Could not record progress of task %s", self.task_id, exc_info=True)
            return False

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                logger.debug("Closing the progress connection failed", exc_info=True)
            self.conn = None


def write_on_connection(alias: str, task_id: int, run_token: str) -> Any:
    """A writer on the Django connection ``alias`` (the testing helpers' inline runs, inside
    the test's transaction, where a second connection would wait on the test's locks)."""

    def write(progress: dict[str, object]) -> bool:
        with connections[alias].cursor() as cursor:
            params: dict[str, Any] = {
                "progress": json.dumps(progress),
                "id": task_id,
                "run_token": run_token,
            }
            cursor.execute(SET_PROGRESS, params)
            return cursor.fetchone() is not None

    return write
