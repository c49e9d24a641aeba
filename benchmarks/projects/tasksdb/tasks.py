"""django-tasks tasks for the benchmark."""

import os
import time

from django_tasks import task


@task()
def noop() -> None:
    """Does nothing."""


@task()
def record_start(path: str, sample: int) -> None:
    """Writes its start time for the latency workload."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, f"{sample} {time.time()!r}\n".encode())
    finally:
        os.close(fd)
