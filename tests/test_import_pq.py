"""pq_import_pq against a real pq 0.9.1, installed from PyPI, that filled its own tables.

pq runs in its own Python 3.13 virtualenv (``tests/realpq/install.py``); its migrations, API
and worker create the rows (``tests/realpq/pq_side.py``) in a database of their own. The test
then follows ``docs/how-to/from-pq.md``: it runs the how-to's SQL, django-pq's migrations and
``pq_import_pq`` as a user would (separate processes), compares every task and schedule field
by field with what pq's own API reads back, imports again, and runs the copied work with a
real ``pq_worker --burst``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection
from psycopg.rows import dict_row

from django_pq.codec import decode_payload, decode_value
from tests.conftest import skip_or_fail
from tests.realpq import install
from tests.realpq.tasks import describe_call

# A virtualenv with real pq, its own worker and ours: a minute or two, so `slow` too.
pytestmark = [pytest.mark.realpq, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
HOWTO = REPO / "docs" / "how-to" / "from-pq.md"
PQ_SIDE = REPO / "tests" / "realpq" / "pq_side.py"
TASKS_MODULE = "tests.realpq.tasks"
REFUSED_LINE = re.compile(r"^  - pq (task|schedule) (\d+) \((.+?)\): (.+)$", re.MULTILINE)


def howto_sql(containing: str) -> str:
    """The how-to's SQL block that contains ``containing``, as the reader would paste it."""
    blocks = re.findall(r"```sql\n(.*?)```", HOWTO.read_text(), re.DOTALL)
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, f"the how-to should have one SQL block with {containing!r}"
    return found[0]


def server_url(name: str) -> str:
    params = connection.settings_dict
    password = f":{params['PASSWORD']}" if params["PASSWORD"] else ""
    host, port = params["HOST"] or "127.0.0.1", params["PORT"] or 5432
    return f"postgresql://{params['USER'] or 'postgres'}{password}@{host}:{port}/{name}"


def admin(sql: str) -> None:
    with psycopg.connect(server_url("postgres"), autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


class Installation:
    """One database that a real pq used, moved aside by the how-to's steps."""

    def __init__(self, url: str, pq_python: Path, dill: Path) -> None:
        self.url, self.pq_python, self.dill = url, pq_python, dill

    def sql(self, statement: str, params: Any = None) -> list[dict[str, Any]]:
        with psycopg.connect(self.url, autocommit=True, row_factory=dict_row) as conn:
            cursor = conn.execute(statement, params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def django(
        self, *args: str, dill: bool = True, allowed: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``manage.py ARGS`` against this database, in a process of its own."""
        path = [str(REPO), *([str(self.dill)] if dill else [])]
        settings = {"PQ_ALLOWED_MODULES": [TASKS_MODULE]} if allowed else {}
        env = {
            **os.environ,
            "DATABASE_URL": self.url,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PYTHONPATH": os.pathsep.join(path),
            "DJANGO_PQ_TEST_SETTINGS": json.dumps(settings),
        }
        return subprocess.run(
            [sys.executable, "-m", "django", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def pq_import(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.django("pq_import_pq", "--schema", "pq_old", *args, **kwargs)

    def pq(self, *args: str) -> str:
        """Run ``pq_side.py ARGS`` with pq's own Python."""
        done = self.pq_start(*args)
        stdout, stderr = done.communicate(timeout=600)
        assert done.returncode == 0, stderr
        return stdout

    def pq_start(self, *args: str) -> subprocess.Popen[str]:
        """Start ``pq_side.py ARGS`` with pq's own Python; the caller waits for it."""
        return subprocess.Popen(
            [str(self.pq_python), str(PQ_SIDE), args[0], self.url, *args[1:]],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_until(self, statement: str, process: subprocess.Popen[str]) -> None:
        """Until ``statement`` returns a row, while ``process`` runs (five minutes at most)."""
        deadline = time.monotonic() + 300
        while not self.sql(statement):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, f"never true: {statement}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def pq_template() -> Iterator[tuple[str, Path, Path]]:
    """A database real pq filled, after the how-to's move and django-pq's migrations."""
    python, reason = install.find_python()
    if python is None:
        # Under CI (or with DJANGO_PQ_REALPQ_REQUIRED set) a runner without Python 3.13 fails.
        if os.environ.get("DJANGO_PQ_REALPQ_REQUIRED"):
            pytest.fail(f"{reason}; DJANGO_PQ_REALPQ_REQUIRED is set")
        skip_or_fail(reason)
    pq_python = install.pq_python(python)
    dill = install.dill_path(pq_python)
    name = f"{connection.settings_dict['NAME']}_realpq"
    admin(f'DROP DATABASE IF EXISTS "{name}"')
    admin(f'CREATE DATABASE "{name}"')
    installation = Installation(server_url(name), pq_python, dill)
    installation.pq("fill")
    installation.sql(howto_sql("SET SCHEMA"))  # step 2, pq's workers being stopped
    migrated = installation.django("migrate", "django_pq", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr
    yield name, pq_python, dill
    admin(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def installation(pq_template: tuple[str, Path, Path]) -> Iterator[Installation]:
    """A fresh copy of the template, for one test."""
    template, pq_python, dill = pq_template
    name = f"{template}_copy"
    admin(f'DROP DATABASE IF EXISTS "{name}"')
    admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield Installation(server_url(name), pq_python, dill)
    admin(f'DROP DATABASE IF EXISTS "{name}"')


def when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def expected_task(pq: dict[str, Any]) -> dict[str, Any]:
    """The django-pq row a pq task should become."""
    finished = pq["status"] in ("completed", "failed")
    return {
        "name": pq["name"],
        "call": pq["call"],
        "priority": pq["priority"],
        "status": pq["status"],
        "run_at": when(pq["run_at"]),
        "created_at": when(pq["created_at"]),
        "started_at": when(pq["started_at"]) if finished else None,
        "finished_at": when(pq["completed_at"]) if finished else None,
        "attempts": pq["attempts"] if finished else 0,
        "max_attempts": max(1, pq["attempts"]) if finished else 1,
        "max_runtime": pq["max_runtime_seconds"],
        "client_id": pq["client_id"],
        "error": pq["error"] or "",
        "error_code": "exception" if pq["status"] == "failed" else "",
        "queue": "default",
    }


def actual_task(row: dict[str, Any]) -> dict[str, Any]:
    fields = [
        "name", "priority", "status", "run_at", "created_at", "started_at", "finished_at",
        "attempts", "max_attempts", "max_runtime", "client_id", "error", "error_code", "queue",
    ]  # fmt: skip
    return {"call": describe_call(*decode_payload(row["payload"])), **{f: row[f] for f in fields}}


def expected_schedule(pq: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": pq["name"],
        "key": pq["key"],
        "call": pq["call"],
        "priority": pq["priority"],
        "run_every": None if pq["run_every"] is None else timedelta(seconds=pq["run_every"]),
        "cron": pq["cron"],
        "timezone": "UTC",
        "next_run": when(pq["next_run"]),
        "last_run": when(pq["last_run"]),
        "max_concurrent": pq["max_concurrent"],
        "active": pq["active"],
        "max_runtime": pq["max_runtime_seconds"],
        "client_id": pq["client_id"],
        "queue": "default",
    }


def actual_schedule(row: dict[str, Any]) -> dict[str, Any]:
    fields = [
        "name", "key", "priority", "run_every", "cron", "timezone", "next_run", "last_run",
        "max_concurrent", "active", "max_runtime", "client_id", "queue",
    ]  # fmt: skip
    return {"call": describe_call(*decode_payload(row["payload"])), **{f: row[f] for f in fields}}


def copies(installation: Installation, source: str, table: str) -> dict[int, dict[str, Any]]:
    """pq id → the django-pq row it was copied to, by the import's own record."""
    rows = installation.sql(
        f"SELECT done.source_id, row.* FROM pq_old.django_pq_imported done "
        f"JOIN {table} row ON row.id = done.target_id WHERE done.source = %s",
        [source],
    )
    return {row["source_id"]: row for row in rows}


def refused_rows(stderr: str) -> set[tuple[str, int, str]]:
    return {(kind, int(pq_id), name) for kind, pq_id, name, _ in REFUSED_LINE.findall(stderr)}


def test_bad_usage_exits_2(installation: Installation) -> None:
    for args in ([], ["--schema", " "], ["--schema", "pq_old", "--no-such-flag"]):
        done = installation.django("pq_import_pq", *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "schema" in done.stderr or "no-such-flag" in done.stderr


def test_every_row_that_cannot_come_over_is_listed_and_nothing_is_written(
    installation: Installation,
) -> None:
    raw = installation.sql(
        "SELECT 'task' AS kind, id, name, payload, priority FROM pq_old.pq_tasks "
        "WHERE status = 'PENDING' UNION ALL "
        "SELECT 'schedule', id, name, payload, priority FROM pq_old.pq_periodic"
    )
    pickled = {
        (row["kind"], row["id"], row["name"])
        for row in raw
        if row["payload"]["pickled_args"] or row["payload"]["pickled_kwargs"]
    }
    odd = {(r["kind"], r["id"], r["name"]) for r in raw if not 0 <= r["priority"] <= 100}
    assert len(pickled) > 30 and len(odd) == 2  # what pq_side.py enqueued

    refused = installation.pq_import("--dry-run")
    assert refused.returncode == 1, refused.stderr
    assert refused_rows(refused.stderr) == pickled | odd
    assert "pickled with dill" in refused.stderr and "priority 150 is outside" in refused.stderr

    # Decoding needs dill where the command runs, and says how to get it.
    no_dill = installation.pq_import("--decode-pickles", dill=False)
    assert no_dill.returncode == 1 and "pip install dill" in no_dill.stderr

    # Functions outside the allowed modules: every row is listed, each with all its reasons.
    everything = {(row["kind"], row["id"], row["name"]) for row in raw}
    disallowed = installation.pq_import(allowed=False)
    assert disallowed.returncode == 1
    assert refused_rows(disallowed.stderr) == everything
    reasons = {
        (kind, int(pq_id)): why for kind, pq_id, _, why in REFUSED_LINE.findall(disallowed.stderr)
    }
    assert all("outside django-pq's allowed modules" in why for why in reasons.values())
    assert all("pickled with dill" in reasons[kind, pq_id] for kind, pq_id, _ in pickled)

    assert installation.sql("SELECT count(*) AS n FROM pq_tasks") == [{"n": 0}]
    assert installation.sql("SELECT count(*) AS n FROM pq_periodic") == [{"n": 0}]
    assert installation.sql("SELECT to_regclass('pq_old.django_pq_imported') AS t") == [{"t": None}]


def test_refuses_while_pq_tasks_run_or_pq_writes(installation: Installation) -> None:
    # What a pq worker leaves while it runs a task (or after it died): status RUNNING.
    installation.sql(
        "UPDATE pq_old.pq_tasks SET status = 'RUNNING', started_at = now() "
        "WHERE id = (SELECT min(id) FROM pq_old.pq_tasks WHERE status = 'PENDING')"
    )
    running = installation.pq_import("--decode-pickles")
    assert running.returncode == 1
    assert "1 pq task(s) are still running. Stop pq's workers" in running.stderr

    # A pq process in the middle of a write holds a row lock on pq's table.
    with psycopg.connect(installation.url) as writer:
        writer.execute("UPDATE pq_old.pq_periodic SET active = active")
        locked = installation.pq_import("--decode-pickles")
    assert locked.returncode == 1
    assert "could not be locked" in locked.stderr
    assert installation.sql("SELECT count(*) AS n FROM pq_tasks") == [{"n": 0}]


def test_refuses_while_a_real_pq_worker_runs_a_schedule(
    installation: Installation, tmp_path: Path
) -> None:
    # pq runs a schedule without a task row: only its lock says a pq worker is at work.
    installation.sql(howto_sql("LEAST(GREATEST"))
    release = tmp_path / "release"
    worker = installation.pq_start("hold_schedule", str(release))
    try:
        installation.wait_until(
            "SELECT 1 FROM pq_old.pq_periodic WHERE key = 'hold' AND locked_until > now() "
            "AND last_run IS NOT NULL",
            worker,
        )
        refused = installation.pq_import("--decode-pickles")
        assert refused.returncode == 1, refused.stdout
        assert "1 pq schedule(s) are being run by a pq worker" in refused.stderr
        assert installation.sql("SELECT count(*) AS n FROM pq_periodic") == [{"n": 0}]
    finally:
        release.touch()
        worker.communicate(timeout=300)
    assert worker.returncode == 0
    # pq's worker ended the run and cleared its lock: now the import goes through.
    done = installation.pq_import("--decode-pickles")
    assert done.returncode == 0, done.stderr
    assert installation.sql("SELECT count(*) AS n FROM pq_periodic") == [{"n": 7}]


def test_schedules_pq_spells_its_own_way_keep_pqs_meaning(installation: Installation) -> None:
    installation.sql(howto_sql("LEAST(GREATEST"))
    installation.pq("odd_schedules")
    done = installation.pq_import("--decode-pickles")
    assert done.returncode == 0, done.stderr
    rows = installation.sql(
        "SELECT key, max_concurrent, cron FROM pq_periodic WHERE key LIKE 'limit%%' "
        "OR key LIKE '@%%'"
    )
    assert {row["key"]: (row["max_concurrent"], row["cron"]) for row in rows} == {
        # pq keeps runs apart for every non-NULL max_concurrent, as django-pq's 1 does.
        "limit0": (1, None),
        "limit-1": (1, None),
        # croniter's nicknames, as the five fields croniter reads them as.
        "@hourly": (1, "0 * * * *"),
        "@daily": (1, "0 0 * * *"),
        "@midnight": (1, "0 0 * * *"),
        "@weekly": (1, "0 0 * * 0"),
        "@monthly": (1, "0 0 1 * *"),
        "@yearly": (1, "0 0 1 1 *"),
        "@annually": (1, "0 0 1 1 *"),
    }


def test_rows_edited_into_shapes_pq_never_writes_are_listed_not_a_traceback(
    installation: Installation,
) -> None:
    installation.sql(howto_sql("LEAST(GREATEST"))
    odd = {
        "null kwargs": '{"args": [], "kwargs": null}',
        "not an object": '"echo me"',
        "pickled index not a number": '{"args": [1], "kwargs": {}, "pickled_args": ["x"]}',
        "pickled key missing": '{"args": [], "kwargs": {}, "pickled_kwargs": ["gone"]}',
    }
    ids = [
        row["id"]
        for row in installation.sql(
            "SELECT id FROM pq_old.pq_tasks WHERE status = 'PENDING' ORDER BY id LIMIT 5"
        )
    ]
    for pq_id, payload in zip(ids, odd.values(), strict=False):
        installation.sql("UPDATE pq_old.pq_tasks SET payload = %s WHERE id = %s", [payload, pq_id])
    installation.sql(
        "UPDATE pq_old.pq_tasks SET max_runtime_seconds = 'NaN' WHERE id = %s", [ids[4]]
    )
    installation.sql("UPDATE pq_old.pq_periodic SET max_runtime_seconds = 0 WHERE key = 'tick'")
    refused = installation.pq_import("--decode-pickles")
    assert refused.returncode == 1, refused.stderr
    assert "Traceback" not in refused.stderr
    reasons = {
        (kind, int(pq_id)): why for kind, pq_id, _, why in REFUSED_LINE.findall(refused.stderr)
    }
    tick = installation.sql("SELECT id FROM pq_old.pq_periodic WHERE key = 'tick'")[0]["id"]
    assert set(reasons) == {*(("task", pq_id) for pq_id in ids), ("schedule", tick)}
    assert all("its payload is not pq's" in reasons["task", pq_id] for pq_id in ids[:4])
    assert "max_runtime_seconds nan is not a positive" in reasons["task", ids[4]]
    assert "max_runtime_seconds 0.0 is not a positive" in reasons["schedule", tick]
    assert installation.sql("SELECT count(*) AS n FROM pq_tasks") == [{"n": 0}]


def test_a_schema_named_like_sql_is_an_identifier(installation: Installation) -> None:
    installation.sql(howto_sql("LEAST(GREATEST"))
    odd = 'Pq Old"; DROP TABLE pq_tasks; --'
    installation.sql('ALTER SCHEMA pq_old RENAME TO "Pq Old""; DROP TABLE pq_tasks; --"')
    first = installation.django("pq_import_pq", "--schema", odd, "--decode-pickles")
    assert first.returncode == 0, first.stderr
    copied = installation.sql("SELECT count(*) AS n FROM pq_tasks")[0]["n"]
    assert copied > 100 and f"Copied {copied} task(s)" in first.stdout
    again = installation.django("pq_import_pq", "--schema", odd, "--decode-pickles")
    assert again.returncode == 0 and "Copied 0 task(s)" in again.stdout, again.stderr
    assert installation.sql(
        'SELECT count(*) AS n FROM "Pq Old""; DROP TABLE pq_tasks; --".django_pq_imported'
    ) == [{"n": copied + 6}]


def test_refuses_django_pqs_own_schema_an_empty_one_and_an_older_pq(
    installation: Installation,
) -> None:
    own = installation.django("pq_import_pq", "--schema", "public")
    assert own.returncode == 1 and "the schema django-pq's own tables live in" in own.stderr
    nowhere = installation.django("pq_import_pq", "--schema", "nowhere")
    assert nowhere.returncode == 1 and r"no table nowhere.pq_tasks" in nowhere.stderr
    # pq before 0.9 had no max_runtime_seconds: pq's own Alembic takes its tables back there.
    installation.pq("downgrade", "c3d4e5f6a7b8")
    older = installation.pq_import()
    assert older.returncode == 1
    assert "pq_old.pq_tasks is not pq 0.9's table: it lacks max_runtime_seconds" in older.stderr


def test_the_howto_moves_every_task_and_schedule_and_django_pq_runs_them(
    installation: Installation,
) -> None:
    installation.sql(howto_sql("LEAST(GREATEST"))  # the how-to's fix for odd priorities
    dumped = json.loads(installation.pq("dump"))
    pq_tasks, pq_schedules = dumped["tasks"], dumped["schedules"]
    pending = [task for task in pq_tasks if task["status"] == "pending"]
    assert {task["status"] for task in pq_tasks} == {"pending", "completed", "failed"}
    assert {task["priority"] for task in pending} >= {0, 1, 25, 50, 75, 99, 100}
    assert len(pq_schedules) == 6

    checked = installation.pq_import("--decode-pickles", "--dry-run")
    assert checked.returncode == 0, checked.stderr
    assert f"Would copy {len(pending)} task(s) and 6 schedule(s)" in checked.stdout
    assert installation.sql("SELECT count(*) AS n FROM pq_tasks") == [{"n": 0}]

    first = installation.pq_import("--decode-pickles")
    assert first.returncode == 0, first.stderr
    assert f"Copied {len(pending)} task(s) and 6 schedule(s)" in first.stdout
    history = installation.pq_import("--decode-pickles", "--include-finished")
    assert history.returncode == 0, history.stderr
    finished = len(pq_tasks) - len(pending)
    assert f"Copied {finished} task(s) and 0 schedule(s)" in history.stdout
    again = installation.pq_import("--decode-pickles", "--include-finished")
    assert again.returncode == 0, again.stderr
    assert "Copied 0 task(s) and 0 schedule(s)" in again.stdout

    # Every row, field by field, against what pq's own API reads back.
    tasks = copies(installation, "pq_tasks", "pq_tasks")
    assert installation.sql("SELECT count(*) AS n FROM pq_tasks") == [{"n": len(pq_tasks)}]
    assert {pq_id: actual_task(row) for pq_id, row in tasks.items()} == {
        task["id"]: expected_task(task) for task in pq_tasks
    }
    schedules = copies(installation, "pq_periodic", "pq_periodic")
    assert {pq_id: actual_schedule(row) for pq_id, row in schedules.items()} == {
        schedule["id"]: expected_schedule(schedule) for schedule in pq_schedules
    }

    # The copied work runs on a real django-pq worker, with the arguments pq stored.
    started = installation.sql("SELECT now() AS t")[0]["t"]
    worker = installation.django("pq_worker", "--burst", "--concurrency", "2")
    assert worker.returncode == 0, worker.stderr
    for pq_task in pending:
        row = installation.sql(
            "SELECT * FROM pq_tasks WHERE id = %s", [tasks[pq_task["id"]]["id"]]
        )[0]
        if when(pq_task["run_at"]) > started:  # type: ignore[operator]
            assert row["status"] == "pending", pq_task
        elif pq_task["name"].endswith(":echo"):
            assert row["status"] == "completed", row["error"]
            assert decode_value(row["result"]) == pq_task["call"]
        else:
            assert (row["status"], row["error_code"]) == ("failed", "exception")
    fired = {
        row["key"]: row
        for row in installation.sql(
            "SELECT p.key, t.status, t.result, t.payload FROM pq_tasks t "
            "JOIN pq_periodic p ON p.id = t.periodic_id"
        )
    }
    due = {
        schedule["key"]: schedule
        for schedule in pq_schedules
        if schedule["active"] and when(schedule["next_run"]) <= started  # type: ignore[operator]
    }
    assert set(fired) == set(due) and "money" in due
    assert decode_value(fired["money"]["result"]) == due["money"]["call"]

    # Only now the how-to drops pq's schema; django-pq's rows stay.
    installation.sql(howto_sql("DROP SCHEMA"))
    assert installation.sql("SELECT to_regnamespace('pq_old') AS s") == [{"s": None}]
    assert installation.sql("SELECT count(*) AS n FROM pq_periodic") == [{"n": 6}]
