"""Driver for procrastinate (sync tasks, LISTEN/NOTIFY on, its defaults otherwise).

    /tmp/peers-venv/bin/python benchmarks/drivers/procrastinate_driver.py drain --tasks 2000

Its worker is one asyncio process; sync tasks run in threads, ``--concurrency`` at a time.
"""

from __future__ import annotations

import asyncio
import sys

import psycopg
from common import System, main
from procrastinate_tasks import URL, app, noop, record_start


def _sql(query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(URL, autocommit=True) as conn:
        cursor = conn.execute(query)
        return cursor.fetchall() if cursor.description else []


def _drain_state() -> tuple[int, float | None, float | None]:
    done, first, last = _sql(
        "SELECT (SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'), "
        "extract(epoch FROM min(at) FILTER (WHERE type = 'started')), "
        "extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')) "
        "FROM procrastinate_events"
    )[0]
    return int(done), first and float(first), last and float(last)  # type: ignore[arg-type]


def _setup() -> None:
    with app.open():
        app.schema_manager.apply_schema()


def _worker(concurrency: int) -> None:
    async def run() -> None:
        async with app.open_async():
            await app.run_worker_async(concurrency=concurrency, install_signal_handlers=True)

    asyncio.run(run())


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        _worker(int(sys.argv[3]))
    elif sys.argv[1:2] == ["setup"]:
        _setup()
        print('{"ok": true}')
    else:
        with app.open():
            main(
                System(
                    database=URL.rsplit("/", 1)[1],
                    enqueue_one=lambda: noop.defer() and None,
                    enqueue_record=lambda path, sample: (
                        record_start.defer(path=path, sample=sample) and None
                    ),
                    insert_for_drain=lambda count: (
                        noop.batch_defer(*({} for _ in range(count))) and None
                    ),
                    enqueue_many=lambda count: (
                        noop.batch_defer(*({} for _ in range(count))) and None
                    ),
                    drain_state=_drain_state,
                    worker_command=lambda concurrency: [
                        sys.executable,
                        __file__,
                        "worker",
                        "--concurrency",
                        str(concurrency),
                    ],
                    clear=lambda: (
                        _sql("TRUNCATE procrastinate_events, procrastinate_jobs CASCADE") and None
                    ),
                )
            )
