"""Real pq 0.9.1 at work, run with the Python of a virtualenv that has ``python-pq``.

    python pq_side.py fill postgresql://.../db   # pq's migrations, its worker, its API
    python pq_side.py dump postgresql://.../db   # what pq stored in pq_old, as JSON
    python pq_side.py downgrade postgresql://.../db REVISION   # pq's Alembic, in pq_old
    python pq_side.py odd_schedules postgresql://.../db   # schedules only pq spells so
    python pq_side.py hold_schedule postgresql://.../db MARKER   # pq's worker mid-run

The rows are read where the how-to moved them, schema ``pq_old``. ``fill`` uses only pq's
public API: its migrations, ``enqueue``/``schedule``, and its own
worker (``run_worker_once``) to leave completed and failed history. ``dump`` reads every
row back through pq's models (with ``search_path`` set to the schema the rows were moved
to) and decodes the arguments with pq's own ``deserialize``, dill pickles included.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from croniter import croniter
from pq import PQ, Periodic, Priority, Task
from pq.serialization import deserialize
from pydantic import BaseModel

from tests.realpq.tasks import boom, describe_call, echo, wait_for

#: Priorities of the pending tasks: pq's five levels and values between them.
PRIORITIES = (0, 1, 10, 25, 49, 50, 51, 75, 99, 100)
#: Priorities pq accepts (any smallint) and django-pq does not (0..100).
OUT_OF_RANGE = (-5, 150)
BERLIN = ZoneInfo("Europe/Berlin")
#: Where the how-to moves pq's tables.
SCHEMA = "pq_old"


class Order(BaseModel):
    """pq stores a Pydantic model as its ``model_dump()``."""

    number: int
    items: list[str]


def sqlalchemy_url(url: str, schema: str | None = None) -> str:
    """pq's SQLAlchemy needs the psycopg2 driver named; ``schema`` becomes the search_path."""
    url = url.replace("postgresql://", "postgresql+psycopg2://", 1)
    return f"{url}?options={quote(f'-csearch_path={schema}')}" if schema else url


def argument_sets(now: datetime) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Calls with JSON arguments, and with the ones pq pickles with dill."""
    return [
        ((), {}),
        ((1, -7, 2**70, 1.5, 0.1, True, None), {}),
        (("text", "ünïcode ✓", ""), {"nested": {"a": [1, [2, 3]], "b": {"c": None}}}),
        (([1, 2], (3, 4)), {"flag": False, "count": 3}),
        ((Order(number=7, items=["a", "b"]),), {"order": Order(number=8, items=[])}),
        ((now,), {}),
        ((datetime(2026, 3, 29, 2, 30, tzinfo=BERLIN), datetime(2026, 1, 2, 3, 4, 5)), {}),
        ((date(2026, 2, 28), time(23, 59, 58, 999), timedelta(days=1, microseconds=5)), {}),
        ((Decimal("1.10"), Decimal("-0.000001")), {"total": Decimal("99999999999.99")}),
        ((uuid.UUID("12345678-1234-5678-1234-567812345678"),), {"ref": uuid.uuid4()}),
        ((b"\x00\xff", {1, 2}, frozenset({"x"})), {"when": now, "amount": Decimal("5")}),
    ]


def fill(url: str) -> None:
    pq = PQ(sqlalchemy_url(url))
    pq.run_db_migrations()
    now = datetime.now(UTC)

    # History: pq's own worker runs these before anything else is enqueued.
    pq.enqueue(echo, 1, "done", priority=Priority.HIGH)
    pq.enqueue(echo, now, Decimal("2.50"), priority=Priority.LOW)
    pq.enqueue(echo, "with id", client_id="history-1")
    pq.enqueue(boom, "bad input", priority=Priority.CRITICAL)
    pq.schedule(echo, "tick", run_every=timedelta(minutes=5), key="tick", priority=60)
    while pq.run_worker_once():
        pass

    # Pending work over every priority, due now and later.
    for priority in PRIORITIES:
        for number, (args, kwargs) in enumerate(argument_sets(now)):
            run_at = now + timedelta(days=number) if number % 3 == 0 else now - timedelta(hours=1)
            pq.enqueue(echo, *args, priority=priority, run_at=run_at, **kwargs)  # type: ignore[arg-type]
    for priority in OUT_OF_RANGE:
        pq.enqueue(echo, "odd priority", priority=priority)  # type: ignore[arg-type]
    pq.enqueue(echo, "keyed", client_id="report-2026-12", max_runtime_seconds=90.5)
    pq.enqueue(boom, "later", run_at=now + timedelta(days=30), priority=Priority.BATCH)

    # Schedules next to the "tick" that pq's worker already fired.
    pq.schedule(echo, "nightly", cron="0 3 * * *", key="nightly", priority=Priority.LOW,
                client_id="nightly-report")  # fmt: skip
    pq.schedule(echo, cron=croniter("*/15 9-17 * * 1-5"), key="quarter")
    pq.schedule(echo, "paused", run_every=timedelta(hours=1), key="paused", active=False,
                max_concurrent=None, max_runtime_seconds=60.0)  # fmt: skip
    pq.schedule(echo, Decimal("12.30"), run_every=timedelta(days=1), key="money",
                when=datetime(2026, 12, 24, 18, 0, tzinfo=BERLIN))  # fmt: skip
    pq.schedule(boom, "hourly", run_every=timedelta(hours=2), priority=Priority.HIGH)
    pq.close()


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def dump(url: str) -> None:
    pq = PQ(sqlalchemy_url(url, SCHEMA))
    with pq.session() as session:
        tasks = [
            {
                "id": task.id,
                "client_id": task.client_id,
                "name": task.name,
                "call": describe_call(*deserialize(task.payload)),
                "priority": task.priority,
                "status": task.status.value,
                "run_at": _when(task.run_at),
                "created_at": _when(task.created_at),
                "started_at": _when(task.started_at),
                "completed_at": _when(task.completed_at),
                "error": task.error,
                "attempts": task.attempts,
                "max_runtime_seconds": task.max_runtime_seconds,
            }
            for task in session.query(Task).order_by(Task.id)
        ]
        schedules = [
            {
                "id": periodic.id,
                "client_id": periodic.client_id,
                "name": periodic.name,
                "key": periodic.key,
                "call": describe_call(*deserialize(periodic.payload)),
                "priority": periodic.priority,
                "run_every": None
                if periodic.run_every is None
                else periodic.run_every.total_seconds(),
                "cron": periodic.cron,
                "next_run": _when(periodic.next_run),
                "last_run": _when(periodic.last_run),
                "max_concurrent": periodic.max_concurrent,
                "active": periodic.active,
                "max_runtime_seconds": periodic.max_runtime_seconds,
            }
            for periodic in session.query(Periodic).order_by(Periodic.id)
        ]
    pq.close()
    json.dump({"tasks": tasks, "schedules": schedules}, sys.stdout)


def odd_schedules(url: str) -> None:
    """Schedules pq accepts and django-pq spells differently: ``max_concurrent`` 0 or below
    (pq locks every non-NULL value, as for 1) and croniter's ``@`` nicknames."""
    pq = PQ(sqlalchemy_url(url, SCHEMA))
    for limit in (0, -1):
        pq.schedule(echo, limit, run_every=timedelta(hours=1), key=f"limit{limit}",
                    max_concurrent=limit)  # fmt: skip
    for nickname in ("@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually",
                     "@midnight"):  # fmt: skip
        pq.schedule(echo, nickname, cron=nickname, key=nickname)
    pq.close()


def hold_schedule(url: str, marker: str) -> None:
    """pq's worker runs a schedule that waits for ``marker``: a pq worker mid-run."""
    from pq.worker import _process_periodic_task

    pq = PQ(sqlalchemy_url(url, SCHEMA))
    # CRITICAL, so pq's worker picks it before the other due schedules.
    pq.schedule(wait_for, marker, run_every=timedelta(hours=1), key="hold",
                priority=Priority.CRITICAL)  # fmt: skip
    assert _process_periodic_task(pq, max_runtime=600)
    pq.close()


def downgrade(url: str, revision: str) -> None:
    """Take pq's tables back to an older pq's schema with pq's own Alembic migrations."""
    import importlib.resources

    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(importlib.resources.files("pq.migrations")))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url, SCHEMA).replace("%", "%%"))
    command.downgrade(config, revision)


if __name__ == "__main__":
    commands = {
        "fill": fill,
        "dump": dump,
        "downgrade": downgrade,
        "odd_schedules": odd_schedules,
        "hold_schedule": hold_schedule,
    }
    commands[sys.argv[1]](*sys.argv[2:])
