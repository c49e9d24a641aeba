"""Driver for django-tasks-db (the database backend of django-tasks), Django 5.2 backport.

    /tmp/peers-venv/bin/python benchmarks/drivers/tasksdb_driver.py drain --tasks 2000 --workers 2

Its worker, ``manage.py db_worker``, runs one task at a time and polls every second (its
default ``--interval``); parallelism comes from more processes (``--workers``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCHMARKS))
os.environ["DJANGO_SETTINGS_MODULE"] = "projects.tasksdb.settings"

import django  # noqa: E402

django.setup()

from common import System, main  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django_tasks_db.models import DBTaskResult  # noqa: E402
from projects.tasksdb.tasks import noop, record_start  # noqa: E402


def _insert(count: int) -> None:
    with transaction.atomic():
        for _ in range(count):
            noop.enqueue()


def _drain_state() -> tuple[int, float | None, float | None]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE status = 'SUCCESSFUL'), "
            "extract(epoch FROM min(started_at)), extract(epoch FROM max(finished_at)) "
            f"FROM {DBTaskResult._meta.db_table}"
        )
        done, first, last = cursor.fetchone()
    return int(done), first and float(first), last and float(last)


SYSTEM = System(
    database=connection.settings_dict["NAME"],
    enqueue_one=lambda: noop.enqueue() and None,
    enqueue_record=lambda path, sample: record_start.enqueue(path, sample) and None,
    insert_for_drain=_insert,
    drain_state=_drain_state,
    worker_command=lambda concurrency: [
        sys.executable,
        "-m",
        "django",
        "db_worker",
        "--no-startup-delay",
        "-v",
        "0",
    ],
    clear=lambda: DBTaskResult.objects.all()._raw_delete(DBTaskResult.objects.db),
    setup=lambda: call_command("migrate", verbosity=0),
)

if __name__ == "__main__":
    os.environ["PYTHONPATH"] = os.pathsep.join([str(BENCHMARKS), str(Path(__file__).parent)])
    main(SYSTEM)
