"""Processes that act on the queue beside the workers: producers, upserters, staff.

Run as ``python -m tests.faults.actors ROLE ...`` with ``DATABASE_URL`` and
``DJANGO_SETTINGS_MODULE`` set; each prints one JSON line of what it did, last.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import django


def produce(count: int, batch: int, key: str) -> dict[str, object]:
    """Enqueue ``count`` ledger tasks, ``batch`` per transaction, through the public API."""
    from django.db import transaction

    import django_pq as pq
    from tests.testapp import tasks

    ids: list[int] = []
    while len(ids) < count:
        with transaction.atomic():
            for _ in range(min(batch, count - len(ids))):
                ids.append(pq.enqueue(tasks.ledger, key=key).pk)
    return {"ids": ids}


def stream(seconds: float, rate: float, key: str, seed: int) -> dict[str, object]:
    """Enqueue ledger tasks through the API at ``rate`` a second for ``seconds``, a third
    of them with retries (``max_attempts=3``), riding out database restarts.

    Only enqueues whose commit was confirmed are reported: one cut off by a restart may
    or may not have committed, and is counted apart (``unconfirmed``).
    """
    from django.db import DatabaseError, connection

    import django_pq as pq
    from tests.testapp import tasks

    rng = random.Random(seed)
    ids: list[int] = []
    retrying: list[int] = []
    unconfirmed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with_retries = rng.random() < 1 / 3
        try:
            task = pq.enqueue(
                tasks.ledger,
                rng.choice([0.0, 0.01, 0.2]),
                key=key,
                max_attempts=3 if with_retries else 1,
            )
        except DatabaseError:
            unconfirmed += 1
            connection.close()
            time.sleep(0.5)
            continue
        ids.append(task.pk)
        if with_retries:
            retrying.append(task.pk)
        time.sleep(rng.expovariate(rate))
    return {"ids": ids, "retrying": retrying, "unconfirmed": unconfirmed}


def upsert(count: int, client_id: str, key: str, seconds: float) -> dict[str, object]:
    """Upsert one client_id ``count`` times, each a new version ``key-n``."""
    import django_pq as pq
    from tests.testapp import tasks

    for n in range(count):
        pq.upsert(tasks.ledger, seconds, key=f"{key}-{n}", client_id=client_id)
    return {"upserts": count}


def staff(ids: list[int], schedule: int | None, seconds: float, seed: int) -> dict[str, object]:
    """Retry, cancel, pause and resume at random for ``seconds``; counts what took effect."""
    import django_pq as pq
    from django_pq.models import Periodic

    rng = random.Random(seed)
    retried: dict[int, int] = {}
    done = {"cancel": 0, "retry": 0, "pause": 0, "resume": 0}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        action = rng.choice(["cancel", "retry", "retry", "pause"])
        task_id = rng.choice(ids)
        if action == "cancel" and pq.cancel(task_id):
            done["cancel"] += 1
        elif action == "retry" and pq.retry(task_id):
            done["retry"] += 1
            retried[task_id] = retried.get(task_id, 0) + 1
        elif action == "pause" and schedule is not None:
            periodic = Periodic.objects.get(pk=schedule)
            periodic.pause()
            time.sleep(rng.uniform(0, 0.3))
            periodic.resume()
            done["pause"] += 1
            done["resume"] += 1
        time.sleep(rng.uniform(0, 0.02))
    return {"done": done, "retried": retried}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["produce", "stream", "upsert", "staff"])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--key", default="")
    parser.add_argument("--client-id", default="")
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--ids", default="")
    parser.add_argument("--schedule", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=10.0)
    options = parser.parse_args()
    django.setup()
    if options.role == "produce":
        report = produce(options.count, options.batch, options.key)
    elif options.role == "stream":
        report = stream(options.seconds, options.rate, options.key, options.seed)
    elif options.role == "upsert":
        report = upsert(options.count, options.client_id, options.key, options.seconds)
    else:
        ids = [int(part) for part in options.ids.split(",") if part]
        report = staff(ids, options.schedule, options.seconds, options.seed)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
