"""The procrastinate app and its tasks for the side-by-side benchmark."""

from __future__ import annotations

import os

import procrastinate
from common import record_start as _record_start

URL = os.environ.get(
    "BENCH_PROCRASTINATE_URL", "postgresql://postgres@127.0.0.1:5432/bench_procrastinate"
)

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=URL))


@app.task(name="noop")
def noop() -> None:
    """Does nothing."""


@app.task(name="record_start")
def record_start(path: str, sample: int) -> None:
    """Writes its start time for the latency workload."""
    _record_start(path, sample)
