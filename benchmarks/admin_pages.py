"""Time each admin page against ``pq_tasks`` with 1,000,000 rows.

    python benchmarks/admin_pages.py [--rows 1000000] [--repeat 5] [--keep]

Creates a scratch database next to ``DATABASE_URL`` (or in a throwaway PostgreSQL when
it is unset), migrates it, fills ``pq_tasks`` with one ``INSERT ... SELECT
generate_series`` (the mix of tests/admin/bulk.py: mostly completed, some failed and
cancelled, the newest 2% pending or running), runs ANALYZE, then requests every page as
a superuser through Django's test client and prints each one's median and slowest
response time and its number of queries. The scratch database is dropped at the end
unless ``--keep`` is given (keeping needs ``DATABASE_URL``: a throwaway PostgreSQL
stops with the script). "SQL ms" is the time spent in queries on the last request; the
rest is Django rendering the page.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SCRATCH = "pq_admin_bench"


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextmanager
def scratch_database(keep: bool) -> Iterator[str]:
    """A fresh database on the server of ``DATABASE_URL``; dropped afterwards."""
    import psycopg

    from devdb import database_url

    base = database_url()
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{SCRATCH}"')
        admin.execute(f'CREATE DATABASE "{SCRATCH}"')
    try:
        yield _with_database(base, SCRATCH)
    finally:
        if not keep:
            with psycopg.connect(base, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{SCRATCH}" WITH (FORCE)')


def pages(task_id: int, failed_id: int) -> list[tuple[str, str, dict[str, str]]]:
    """(label, URL name or path, query) of every page to time."""
    from django.urls import reverse

    tasks = reverse("admin:django_pq_task_changelist")
    return [
        ("tasks: default list", tasks, {}),
        *[
            (f"tasks: status={s}", tasks, {"status__exact": s})
            for s in ("pending", "running", "completed", "failed", "cancelled")
        ],
        ("tasks: queue=mail", tasks, {"queue": "mail"}),
        ("tasks: task name", tasks, {"name": "tests.testapp.tasks:noop"}),
        ("tasks: priority HIGH", tasks, {"priority": "75"}),
        (
            "tasks: finished today",
            tasks,
            {"finished_at__gte": time.strftime("%Y-%m-%d 00:00:00+00:00")},
        ),
        ("tasks: search by id", tasks, {"q": str(task_id)}),
        ("tasks: page 100", tasks, {"p": "100"}),
        ("task detail", reverse("admin:django_pq_task_change", args=[task_id]), {}),
        ("failed task detail", reverse("admin:django_pq_task_change", args=[failed_id]), {}),
        ("overview", reverse("admin:django_pq_overview"), {}),
        ("schedules", reverse("admin:django_pq_periodic_changelist"), {}),
        ("schedule form (add)", reverse("admin:django_pq_periodic_add"), {}),
        ("workers", reverse("admin:django_pq_worker_changelist"), {}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    options = parser.parse_args()

    with scratch_database(options.keep) as url:
        os.environ["DATABASE_URL"] = url
        os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
        import django

        django.setup()
        from django.contrib.auth.models import User
        from django.core.management import call_command
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext, setup_test_environment

        from django_pq.models import Task
        from tests.admin.bulk import fill_tasks

        setup_test_environment()
        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        with connection.cursor() as cursor:
            fill_tasks(cursor, options.rows)
        print(f"filled {options.rows:,} rows in {time.perf_counter() - started:.1f} s")
        user = User.objects.create_superuser("bench", password="bench")
        client = Client()
        client.force_login(user)
        task_id = Task.objects.order_by("-id").values_list("id", flat=True)[1000]
        failed_id = (
            Task.objects.filter(status="failed").order_by("-id").values_list("id", flat=True)[0]
        )

        print(f"{'page':32} {'median ms':>10} {'max ms':>8} {'SQL ms':>8} {'queries':>8}")
        for label, path, query in pages(task_id, failed_id):
            timings = []
            for _ in range(options.repeat):
                with CaptureQueriesContext(connection) as captured:
                    begin = time.perf_counter()
                    response = client.get(path, query)
                    timings.append((time.perf_counter() - begin) * 1000)
                if response.status_code != 200:
                    raise SystemExit(f"{label}: HTTP {response.status_code}")
            sql_ms = sum(float(query["time"]) for query in captured.captured_queries) * 1000
            print(f"{label:32} {statistics.median(timings):10.1f} {max(timings):8.1f} "
                  f"{sql_ms:8.1f} {len(captured.captured_queries):8d}")  # fmt: skip
        connection.close()


if __name__ == "__main__":
    main()
