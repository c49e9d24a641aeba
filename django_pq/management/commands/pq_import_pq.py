"""``manage.py pq_import_pq --schema OLD``: copy pq 0.9's tasks and schedules into django-pq.

pq (``python-pq``) and django-pq both name their tables ``pq_tasks`` and ``pq_periodic``, so
an existing pq installation has to live in another schema of the same database (see
``docs/how-to/from-pq.md``). This command reads that schema and writes django-pq rows in one
transaction: all or nothing. Every row it cannot bring over safely is listed with the reason,
and then nothing is written.

A re-run copies only what the last runs did not: each copied row is recorded in
``OLD.django_pq_imported`` (pq's table and id, django-pq's id), a table in pq's schema, so
django-pq's tables keep no trace of pq and a task that already ran and was pruned is not
copied again.
"""

from __future__ import annotations

import base64
import importlib
import json
import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from croniter import croniter
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import OperationalError, connections, transaction

from django_pq.codec import encode_payload
from django_pq.conf import pq_settings
from django_pq.exceptions import InvalidSchedule, UnserializableArgument
from django_pq.models import ErrorCode, Periodic, Status, Task
from django_pq.schedules import validate_cron
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
    "id",
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
#: pq's ``task_status`` enum stores its member names in capitals (``'PENDING'``); the
#: statuses are compared in lower case so they read as django-pq's.
FINISHED = ("completed", "failed")
#: The table in pq's schema that records what was copied, so a re-run skips it.
IMPORTED = "django_pq_imported"
#: How long to wait for a pq process that still writes to pq's tables.
LOCK_TIMEOUT = "5s"

PRIORITY_REFUSED = "is outside django-pq's 0..100"

Unpickle = Callable[[Any], Any]
Row = TypeVar("Row", Task, Periodic)


class Refused(CommandError):
    """The import cannot be done safely; the message says why and what to do."""


class RowRefused(Exception):
    """One source row cannot be copied; the message says why."""


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _dill_unpickler() -> Unpickle:
    try:
        dill = importlib.import_module("dill")  # only needed with --decode-pickles
    except ImportError:
        raise Refused(
            "--decode-pickles needs dill, the library pq pickled with: pip install dill "
            "(in the environment this command runs in), then run the import again."
        ) from None

    def unpickle(value: Any) -> Any:
        return dill.loads(base64.b64decode(str(value).encode("ascii")))

    return unpickle


def _payload_parts(raw: Any) -> tuple[list[Any], dict[str, Any], list[int], list[str]]:
    """args, kwargs and the pickled indexes and keys of pq's payload, as pq's
    ``deserialize`` reads them; :class:`RowRefused` for any other shape (edited by hand)."""
    data = _json(raw)
    if isinstance(data, dict):
        args, kwargs = data.get("args", []), data.get("kwargs", {})
        pickled_args, pickled_kwargs = data.get("pickled_args", []), data.get("pickled_kwargs", [])
        if (
            isinstance(args, list)
            and isinstance(kwargs, dict)
            and isinstance(pickled_args, list)
            and all(type(i) is int and 0 <= i < len(args) for i in pickled_args)
            and isinstance(pickled_kwargs, list)
            and all(isinstance(key, str) and key in kwargs for key in pickled_kwargs)
        ):
            return args, kwargs, pickled_args, pickled_kwargs
    shown = json.dumps(data)
    shown = shown if len(shown) <= 200 else f"{shown[:200]}..."
    raise RowRefused(
        "its payload is not pq's (an object with an args list, a kwargs object and the "
        f"pickled_args/pickled_kwargs that name them): {shown}"
    )


def _payload(raw: Any, unpickle: Unpickle | None) -> dict[str, Any]:
    """pq's payload (JSON, with dill pickles marked in ``pickled_args``/``pickled_kwargs``)
    in django-pq's codec. Raises :class:`RowRefused` when it cannot be carried over."""
    args, kwargs, pickled_args, pickled_kwargs = _payload_parts(raw)
    args, kwargs = list(args), dict(kwargs)
    # (where the value sits, its index or key, how an error names it)
    pickled: list[tuple[Any, Any, str]] = [
        (args, i, f"positional argument {i + 1}") for i in pickled_args
    ]
    pickled += [(kwargs, key, f"argument {key!r}") for key in pickled_kwargs]
    if pickled and unpickle is None:
        raise RowRefused(
            f"arguments pickled with dill ({', '.join(where for _, _, where in pickled)}); "
            "pass --decode-pickles to decode them"
        )
    for container, index, where in pickled:
        assert unpickle is not None
        try:
            container[index] = unpickle(container[index])
        except Exception as error:  # any failure to unpickle refuses the row
            raise RowRefused(f"{where} could not be unpickled: {error!r}") from None
    try:
        return encode_payload(tuple(args), kwargs)
    except UnserializableArgument as error:
        raise RowRefused(str(error)) from None


def _priority(value: Any) -> int:
    priority = int(value)
    if not 0 <= priority <= 100:
        raise RowRefused(f"priority {priority} {PRIORITY_REFUSED}")
    return priority


def _max_runtime(value: Any) -> float | None:
    # pq's API refuses these too, but its table takes them (a row written by hand).
    if value is not None and not (math.isfinite(value) and value > 0):
        raise RowRefused(f"max_runtime_seconds {value!r} is not a positive number of seconds")
    return value  # type: ignore[no-any-return]


def _cron(expression: str) -> str:
    """pq's cron in django-pq's five fields: croniter's nicknames (``@daily``, which pq
    stores as given) become the fields croniter reads them as."""
    if expression.strip().startswith("@"):
        try:
            return " ".join(str(field) for field in croniter(expression.strip()).expressions)
        except (ValueError, KeyError):
            pass  # validate_cron names the problem
    return validate_cron(expression)


class Command(BaseCommand):
    help = (
        "Copy tasks and schedules from pq 0.9 tables in another schema of the same database "
        "into django-pq's tables, in one transaction. Rows already copied by an earlier run "
        "are skipped. Exit codes: 0 copied (or checked), 1 refused, 2 bad usage."
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
            "--decode-pickles",
            action="store_true",
            help="Decode the arguments pq pickled with dill (every datetime, Decimal, UUID, "
            "set, bytes, ...) and store them in django-pq's JSON codec. This runs pickle "
            "(dill.loads) on the data in pq's tables, with --dry-run too, which can execute any "
            "code in this process: use it only on pq data you trust as your own code. Needs "
            "dill installed (default: off, such rows are refused).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Check and count, write nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        schema = options["schema"]
        if not schema.strip():
            raise CommandError("--schema must name a schema, e.g. --schema pq_old.", returncode=2)
        unpickle = _dill_unpickler() if options["decode_pickles"] else None
        statuses = ["pending", *(FINISHED if options["include_finished"] else ())]
        alias = pq_settings.DATABASE
        with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
            self._check_schema(cursor, schema)
            self._lock(cursor, schema)
            self._check_running(cursor, schema)
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {_table(schema, IMPORTED)} ("
                "source varchar(20) NOT NULL, source_id bigint NOT NULL, target_id bigint NOT "
                "NULL, imported_at timestamptz NOT NULL DEFAULT now(), "
                "PRIMARY KEY (source, source_id))"
            )
            task_rows = self._read(cursor, schema, "pq_tasks", PQ_TASK_COLUMNS, statuses)
            schedule_rows = self._read(cursor, schema, "pq_periodic", PQ_PERIODIC_COLUMNS)
            problems: list[str] = []
            tasks = self._convert(task_rows, "task", self._task, unpickle, problems)
            schedules = self._convert(schedule_rows, "schedule", self._schedule, unpickle, problems)
            problems += self._conflicts(tasks, schedules)
            if problems:
                raise Refused(self._refusal(schema, problems))
            skipped = self._count_imported(cursor, schema)
            if options["dry_run"]:
                transaction.set_rollback(True, using=alias)
                verb = "Would copy"
            else:
                self._write(cursor, schema, tasks, schedules)
                verb = "Copied"
        self.stdout.write(
            f"{verb} {len(tasks)} task(s) and {len(schedules)} schedule(s) from {schema}; "
            f"{skipped} row(s) copied by an earlier run were skipped. The pq tables are left "
            "as they were; drop them once you have checked the copy."
        )

    def _check_schema(self, cursor: Any, schema: str) -> None:
        cursor.execute("SELECT current_schema()")
        if cursor.fetchone()[0] == schema:
            raise Refused(
                f"{schema} is the schema django-pq's own tables live in. pq's tables share "
                "their names, so pq's must be moved to another schema first (CREATE SCHEMA "
                "pq_old; ALTER TABLE pq_tasks SET SCHEMA pq_old; and the same for pq_periodic, "
                "pq_schema_version and the type task_status), before django-pq's migrations "
                "run. Then: manage.py pq_import_pq --schema pq_old."
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

    def _lock(self, cursor: Any, schema: str) -> None:
        """Keep pq (and a second import) from writing the source rows while they are copied."""
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        try:
            cursor.execute(
                f"LOCK TABLE {_table(schema, 'pq_tasks')}, {_table(schema, 'pq_periodic')} "
                "IN SHARE ROW EXCLUSIVE MODE"
            )
        except OperationalError:
            raise Refused(
                f"Something is still writing to {schema}'s pq tables (a pq worker, or another "
                f"import), so they could not be locked within {LOCK_TIMEOUT}. Stop pq's workers "
                "and run the import again."
            ) from None
        cursor.execute("SET LOCAL lock_timeout = DEFAULT")

    def _check_running(self, cursor: Any, schema: str) -> None:
        """Refuse while pq runs anything: a task (status RUNNING) or a schedule, which pq
        runs without a task row and marks with ``locked_until`` (set for the run whenever
        ``max_concurrent`` is not NULL, cleared when it ends)."""
        checks = [
            (
                "pq_tasks",
                "lower(status::text) = 'running'",
                "pq task(s) are still running. Stop pq's workers (they would finish rows that "
                "were already copied), let the rows settle, and run the import again. If no pq "
                "worker is left, the rows were left by one that died: decide their fate in pq's "
                f"table (UPDATE {schema}.pq_tasks SET status = 'FAILED' WHERE status = "
                "'RUNNING', or 'PENDING' to run them again), then import.",
            ),
            (
                "pq_periodic",
                "max_concurrent IS NOT NULL AND locked_until > now()",
                "pq schedule(s) are being run by a pq worker (locked_until is in the future). "
                "Stop pq's workers, let the runs end, and run the import again. If no pq "
                "worker is left, the lock was left by one that died: UPDATE "
                f"{schema}.pq_periodic SET locked_until = NULL; then import.",
            ),
        ]
        for table, where, message in checks:
            cursor.execute(f"SELECT count(*) FROM {_table(schema, table)} WHERE {where}")
            running = cursor.fetchone()[0]
            if running:
                raise Refused(f"{running} {message}")

    def _read(
        self,
        cursor: Any,
        schema: str,
        table: str,
        columns: tuple[str, ...],
        statuses: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """The rows of ``table`` that no earlier run copied, in id order."""
        quoted = ", ".join(f'row."{name}"' for name in columns)
        where = " AND lower(row.status::text) = ANY(%s)" if statuses else ""
        cursor.execute(
            f"SELECT {quoted} FROM {_table(schema, table)} row WHERE NOT EXISTS (SELECT 1 FROM "
            f"{_table(schema, IMPORTED)} done WHERE done.source = %s AND done.source_id = row.id)"
            f"{where} ORDER BY row.id",
            [table, statuses] if statuses else [table],
        )
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def _convert(
        self,
        rows: list[dict[str, Any]],
        kind: str,
        convert: Callable[[dict[str, Any], Unpickle | None], Row],
        unpickle: Unpickle | None,
        problems: list[str],
    ) -> list[tuple[int, Row]]:
        """``(pq id, new row)`` for each row; a row that cannot be copied adds a problem."""
        converted = []
        for row in rows:
            try:
                converted.append((row["id"], convert(row, unpickle)))
            except RowRefused as error:
                problems.append(f"pq {kind} {row['id']} ({row['name']}): {error}")
        return converted

    def _task(self, row: dict[str, Any], unpickle: Unpickle | None) -> Task:
        reasons: list[str] = []
        max_runtime = _refused_into(reasons, _max_runtime, row["max_runtime_seconds"])
        payload, priority = self._checked(row, unpickle, reasons)
        status = str(row["status"]).lower()
        finished = status in FINISHED
        return Task(
            name=row["name"],
            payload=payload,
            priority=priority,
            status=Status(status),
            run_at=row["run_at"],
            created_at=row["created_at"],
            started_at=row["started_at"] if finished else None,
            finished_at=row["completed_at"] if finished else None,
            attempts=row["attempts"] if finished else 0,
            # pq runs a task at most once.
            max_attempts=max(1, int(row["attempts"] or 0)) if finished else 1,
            max_runtime=max_runtime,
            client_id=row["client_id"],
            error=row["error"] or "",
            error_code=ErrorCode.EXCEPTION if status == "failed" else "",
        )

    def _schedule(self, row: dict[str, Any], unpickle: Unpickle | None) -> Periodic:
        every, cron, reasons = row["run_every"], row["cron"] or None, []
        if cron:
            try:
                cron = _cron(cron)
            except InvalidSchedule as error:
                reasons.append(str(error))
        elif not isinstance(every, timedelta) or every <= timedelta(0):
            reasons.append(f"run_every {every!r} is not a positive interval")
        max_runtime = _refused_into(reasons, _max_runtime, row["max_runtime_seconds"])
        payload, priority = self._checked(row, unpickle, reasons)
        limit = row["max_concurrent"]
        return Periodic(
            name=row["name"],
            key=row["key"] or "",
            payload=payload,
            priority=priority,
            run_every=None if cron else every,
            cron=cron,
            timezone="UTC",  # pq evaluates cron in UTC
            next_run=row["next_run"],
            last_run=row["last_run"],
            # pq keeps runs from overlapping for every non-NULL max_concurrent (its API
            # takes 0 and below): django-pq spells that 1.
            max_concurrent=None if limit is None else 1,
            active=row["active"],
            max_runtime=max_runtime,
            client_id=row["client_id"],
        )

    def _checked(
        self, row: dict[str, Any], unpickle: Unpickle | None, reasons: list[str]
    ) -> tuple[dict[str, Any], int]:
        """The row's payload and priority, or :class:`RowRefused` with every reason at once."""
        if not is_allowed_module(row["name"].partition(":")[0]):
            reasons.append(
                "its module is outside django-pq's allowed modules, so a worker would refuse "
                "to run it (add the module to PQ_ALLOWED_MODULES, or move it into an installed app)"
            )
        payload = _refused_into(reasons, _payload, row["payload"], unpickle) or {}
        priority = _refused_into(reasons, _priority, row["priority"]) or 0
        if reasons:
            raise RowRefused("; ".join(reasons))
        return payload, priority

    def _conflicts(
        self, tasks: list[tuple[int, Task]], schedules: list[tuple[int, Periodic]]
    ) -> list[str]:
        """Rows that would take a ``client_id`` or schedule that django-pq already has."""
        alias = pq_settings.DATABASE
        task_ids = set(
            Task.objects.using(alias)
            .filter(client_id__in=[t.client_id for _, t in tasks if t.client_id])
            .values_list("client_id", flat=True)
        )
        schedule_ids = set(
            Periodic.objects.using(alias)
            .filter(client_id__in=[s.client_id for _, s in schedules if s.client_id])
            .values_list("client_id", flat=True)
        )
        names = {s.name for _, s in schedules}
        keys = set(Periodic.objects.using(alias).filter(name__in=names).values_list("name", "key"))
        problems = [
            f"pq task {pq_id} ({task.name}): client_id {task.client_id!r} is already taken in "
            "django-pq"
            for pq_id, task in tasks
            if task.client_id in task_ids
        ]
        for pq_id, schedule in schedules:
            if schedule.client_id in schedule_ids:
                problems.append(
                    f"pq schedule {pq_id} ({schedule.name}): client_id {schedule.client_id!r} "
                    "is already taken in django-pq"
                )
            if (schedule.name, schedule.key) in keys:
                problems.append(
                    f"pq schedule {pq_id} ({schedule.name}): django-pq already has a schedule "
                    f"of this function with key {schedule.key!r} (declared in code?)"
                )
        return problems

    def _refusal(self, schema: str, problems: list[str]) -> str:
        return "\n".join(
            [
                f"Nothing was copied: {len(problems)} row(s) of {schema} cannot be brought over "
                "as they are:",
                *(f"  - {problem}" for problem in problems),
                "Fix each in pq's tables or in django-pq and run the import again; rows you do "
                f"not want can be deleted from {schema}'s tables.",
                *(
                    [
                        f"To keep pq's order within 0..100: UPDATE {schema}.pq_tasks SET priority "
                        "= LEAST(GREATEST(priority, 0), 100); and the same for "
                        f"{schema}.pq_periodic."
                    ]
                    if any(PRIORITY_REFUSED in problem for problem in problems)
                    else []
                ),
            ]
        )

    def _count_imported(self, cursor: Any, schema: str) -> int:
        cursor.execute(f"SELECT count(*) FROM {_table(schema, IMPORTED)}")
        count: int = cursor.fetchone()[0]
        return count

    def _write(
        self,
        cursor: Any,
        schema: str,
        tasks: list[tuple[int, Task]],
        schedules: list[tuple[int, Periodic]],
    ) -> None:
        alias = pq_settings.DATABASE
        Task.objects.using(alias).bulk_create([t for _, t in tasks], batch_size=1000)
        Periodic.objects.using(alias).bulk_create([s for _, s in schedules], batch_size=1000)
        for source, pairs in (("pq_tasks", tasks), ("pq_periodic", schedules)):
            cursor.execute(
                f"INSERT INTO {_table(schema, IMPORTED)} (source, source_id, target_id) "
                "SELECT %s, unnest(%s::bigint[]), unnest(%s::bigint[])",
                [source, [pq_id for pq_id, _ in pairs], [row.pk for _, row in pairs]],
            )


Value = TypeVar("Value")


def _refused_into(reasons: list[str], convert: Callable[..., Value], *args: Any) -> Value | None:
    """``convert(*args)``, or None with the reason it raised added to ``reasons``."""
    try:
        return convert(*args)
    except RowRefused as error:
        reasons.append(str(error))
        return None


def _table(schema: str, table: str) -> str:
    """``"schema".table``, with the schema quoted as an identifier."""
    return '"{}".{}'.format(schema.replace('"', '""'), table)
