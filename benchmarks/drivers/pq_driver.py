"""Driver for pq 0.9.1 (PyPI python-pq), run with the Python 3.13 virtualenv that holds it.

    /tmp/pq-venv/bin/python benchmarks/drivers/pq_driver.py drain --tasks 2000

The worker is pq's own ``PQ.run_worker`` with its defaults (poll every second), started
as ``pq_driver.py worker --concurrency N``.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

import pq_tasks
from common import System, main
from pq import PQ, Priority
from pq.models import Task
from pq.serialization import serialize
from sqlalchemy import text

URL = os.environ.get("BENCH_PQ_URL", "postgresql://postgres@127.0.0.1:5432/bench_pq")


def _client() -> PQ:
    return PQ(URL.replace("postgresql://", "postgresql+psycopg2://", 1))


client = _client()


def _insert(count: int) -> None:
    # pq has no bulk enqueue; write its own rows in one transaction, as enqueue() would.
    now = datetime.now(UTC)
    payload = serialize((), {})
    with client.session() as session:
        session.add_all(
            Task(name="pq_tasks:noop", payload=payload, run_at=now, priority=Priority.NORMAL)
            for _ in range(count)
        )


def _drain_state() -> tuple[int, float | None, float | None]:
    with client.session() as session:
        row = session.execute(
            text(
                "SELECT count(*) FILTER (WHERE status = 'COMPLETED'), "
                "extract(epoch FROM min(started_at)), extract(epoch FROM max(completed_at)) "
                "FROM pq_tasks"
            )
        ).one()
    return int(row[0]), row[1] and float(row[1]), row[2] and float(row[2])


def _clear() -> None:
    with client.session() as session:
        session.execute(text("DELETE FROM pq_tasks"))


SYSTEM = System(
    database=URL.rsplit("/", 1)[1],
    enqueue_one=lambda: client.enqueue(pq_tasks.noop) and None,
    enqueue_record=lambda path, sample: (
        client.enqueue(pq_tasks.record_start, path, sample) and None
    ),
    insert_for_drain=_insert,
    drain_state=_drain_state,
    worker_command=lambda concurrency: [
        sys.executable,
        __file__,
        "worker",
        "--concurrency",
        str(concurrency),
    ],
    clear=_clear,
    setup=client.run_db_migrations,
)

if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        client.run_worker(concurrency=int(sys.argv[3]))
    else:
        main(SYSTEM)
