"""``manage.py pq_import_pq --schema OLD``: copy pq 0.9's tasks and schedules into django-pq.

pq (``python-pq``) and django-pq both name their tables ``pq_tasks`` and ``pq_periodic``, so
an existing pq installation has to live in another schema of the same database (move it
with ``ALTER TABLE pq_tasks SET SCHEMA pq_old`` and the same for ``pq_periodic``). This
command reads that schema and writes django-pq rows in one transaction: all or nothing.

It refuses, saying why, when the schema is not pq's, when pq tasks are still running (stop
pq's workers first), when a row's arguments were pickled with dill (django-pq never loads
those), when a function is outside django-pq's allowed modules, or when a ``client_id`` or
schedule already exists on the django-pq side. ``--dry-run`` checks without writing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections, transaction

from django_pq.codec import encode_payload
from django_pq.conf import pq_settings
from django_pq.models import ErrorCode, Periodic, Status, Task
from django_pq.task_paths import is_allowed_module

#: Columns of pq 0.9's tables that the import reads.
PQ_TASK_COLUMNS = (
    "id",
    "client_id",
    "name",
    "payload",
    "priority",
    "status",
    "run_at",
    "created_at",
    "started_at",
    "completed_at",
    "error",
    "attempts",
    "max_runtime_seconds",
)
PQ_PERIODIC_COLUMNS = (
    "client_id",
    "name",
    "key",
    "payload",
    "priority",
    "run_every",
    "cron",
    "next_run",
    "max_concurrent",
    "active",
    "max_runtime_seconds",
    "last_run",
)
FINISHED = ("completed", "failed")


class Refused(CommandError):
    """The import cannot be done safely; the message says why and what to do."""


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _payload(raw: Any, where: str) -> dict[str, Any]:
    """pq's payload (plain JSON, optionally with dill pickles) in django-pq's codec."""
    data = _json(raw) or {}
    if data.get("pickled_args") or data.get("pickled_kwargs"):
        raise Refused(
            f"{where} has arguments pickled with dill, which django-pq never unpickles (the "
            "database is not a code channel). Re-enqueue it by hand with JSON arguments, or "
            "delete it from the pq schema, then run the import again."
        )
    return encode_payload(tuple(data.get("args", [])), dict(data.get("kwargs", {})))


class Command(BaseCommand):
    help = (
        "Copy tasks and schedules from pq 0.9 tables in another schema of the same database "
        "into django-pq's tables, in one transaction."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--schema", required=True, help="The schema holding pq's pq_tasks and pq_periodic."
        )
        parser.add_argument(
            "--include-finished",
            action="store_true",
            help="Also copy completed and failed tasks (default: pending ones only).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Check and count, write nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        schema = options["schema"]
        alias = pq_settings.DATABASE
        with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
            self._check_schema(cursor, schema)
            statuses = ["pending", *(FINISHED if options["include_finished"] else ())]
            tasks = self._read(cursor, schema, "pq_tasks", PQ_TASK_COLUMNS, statuses)
            schedules = self._read(cursor, schema, "pq_periodic", PQ_PERIODIC_COLUMNS)
            self._check_running(cursor, schema)
            new_tasks = [self._task(row) for row in tasks]
            new_schedules = [self._schedule(row) for row in schedules]
            self._check_names({t.name for t in new_tasks} | {p.name for p in new_schedules})
            self._check_conflicts(new_tasks, new_schedules)
            if options["dry_run"]:
                transaction.set_rollback(True, using=alias)
                verb = "Would copy"
            else:
                Task.objects.using(alias).bulk_create(new_tasks, batch_size=1000)
                Periodic.objects.using(alias).bulk_create(new_schedules, batch_size=1000)
                verb = "Copied"
        self.stdout.write(
            f"{verb} {len(new_tasks)} task(s) and {len(new_schedules)} schedule(s) from "
            f"{schema}. The pq tables are left as they were; drop them when you are done."
        )

    def _check_schema(self, cursor: Any, schema: str) -> None:
        cursor.execute("SELECT current_schema()")
        if cursor.fetchone()[0] == schema:
            raise Refused(
                f"{schema} is the schema django-pq's own tables live in. pq's tables share "
                "their names, so pq's must be moved to another schema first: CREATE SCHEMA "
                "pq_old; ALTER TABLE pq_tasks SET SCHEMA pq_old; (and pq_periodic), before "
                "django-pq's migrations run. Then: manage.py pq_import_pq --schema pq_old."
            )
        for table, columns in (("pq_tasks", PQ_TASK_COLUMNS), ("pq_periodic", PQ_PERIODIC_COLUMNS)):
            cursor.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s",
                [schema, table],
            )
            found = {row[0] for row in cursor.fetchall()}
            if not found:
                raise Refused(
                    f"There is no table {schema}.{table} in this database. Pass the schema "
                    "that holds pq's tables with --schema (it must be the same database as "
                    "PQ_DATABASE)."
                )
            missing = sorted(set(columns) - found)
            if missing:
                raise Refused(
                    f"{schema}.{table} is not pq 0.9's table: it lacks {', '.join(missing)}. "
                    "Upgrade pq to 0.9.1 and run its migrations before importing."
                )

    def _read(
        self,
        cursor: Any,
        schema: str,
        table: str,
        columns: Iterable[str],
        statuses: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        names = list(columns)
        quoted = ", ".join(f'"{name}"' for name in names)
        source = f'"{schema.replace(chr(34), chr(34) * 2)}".{table}'
        where = " WHERE status::text = ANY(%s) ORDER BY id" if statuses else ""
        cursor.execute(f"SELECT {quoted} FROM {source}{where}", [statuses] if statuses else [])
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def _check_running(self, cursor: Any, schema: str) -> None:
        quoted = schema.replace('"', '""')
        cursor.execute(f"SELECT count(*) FROM \"{quoted}\".pq_tasks WHERE status::text = 'running'")
        running = cursor.fetchone()[0]
        if running:
            raise Refused(
                f"{running} pq task(s) are still running. Stop pq's workers (they would finish "
                "rows that were already copied), let the rows settle, and run the import again."
            )

    def _task(self, row: dict[str, Any]) -> Task:
        status = str(row["status"])
        failed = status == "failed"
        return Task(
            name=row["name"],
            payload=_payload(row["payload"], f"pq task {row['id']} ({row['name']})"),
            priority=min(max(int(row["priority"]), 0), 100),
            status=Status(status),
            run_at=row["run_at"],
            created_at=row["created_at"],
            started_at=row["started_at"] if status in FINISHED else None,
            finished_at=row["completed_at"] if status in FINISHED else None,
            attempts=row["attempts"] if status in FINISHED else 0,
            max_attempts=max(1, int(row["attempts"] or 0)) if status in FINISHED else 1,
            max_runtime=row["max_runtime_seconds"],
            client_id=row["client_id"],
            error=row["error"] or "",
            error_code=ErrorCode.EXCEPTION if failed else "",
        )

    def _schedule(self, row: dict[str, Any]) -> Periodic:
        every = row["run_every"]
        return Periodic(
            name=row["name"],
            key=row["key"] or "",
            payload=_payload(row["payload"], f"pq schedule {row['name']}[{row['key']}]"),
            priority=min(max(int(row["priority"]), 0), 100),
            run_every=every if isinstance(every, timedelta) else None,
            cron=row["cron"] or None,
            timezone="UTC",  # pq evaluates cron in UTC
            next_run=row["next_run"],
            last_run=row["last_run"],
            max_concurrent=row["max_concurrent"],
            active=row["active"],
            max_runtime=row["max_runtime_seconds"],
            client_id=row["client_id"],
        )

    def _check_names(self, names: set[str]) -> None:
        refused = sorted(name for name in names if not is_allowed_module(name.partition(":")[0]))
        if refused:
            raise Refused(
                f"These functions are outside django-pq's allowed modules, so a worker would "
                f"refuse to run them: {', '.join(refused)}. Add their modules to "
                "PQ_ALLOWED_MODULES (or move them into an installed app) and import again."
            )

    def _check_conflicts(self, tasks: list[Task], schedules: list[Periodic]) -> None:
        client_ids = [task.client_id for task in tasks if task.client_id]
        client_ids += [schedule.client_id for schedule in schedules if schedule.client_id]
        taken = set(
            Task.objects.filter(client_id__in=client_ids).values_list("client_id", flat=True)
        )
        taken |= set(
            Periodic.objects.filter(client_id__in=client_ids).values_list("client_id", flat=True)
        )
        existing = {
            (name, key)
            for name, key in Periodic.objects.values_list("name", "key")
            if any(s.name == name and s.key == key for s in schedules)
        }
        if taken or existing:
            shown = sorted(str(c) for c in taken) + [
                f"schedule {name}[{key}]" for name, key in sorted(existing)
            ]
            raise Refused(
                f"Already present in django-pq: {', '.join(shown[:10])}"
                f"{' ...' if len(shown) > 10 else ''}. Was the import run before? Delete "
                "those rows on one side, then run it again."
            )
