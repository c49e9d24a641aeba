"""``manage.py pq_bench``: measure enqueue, drain, pickup latency, idle load and the fork floor."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_pq.bench import QUEUE, WORKLOADS, BenchConfig, BenchError, format_table, run

_DEFAULTS = BenchConfig()


class Command(BaseCommand):
    help = (
        "Benchmark django-pq on this project's database with real pq_worker processes: "
        "enqueue rate, drain throughput of no-op tasks, pickup latency at idle, idle "
        f"database load, and the fork+exit+wait floor. Uses the queue {QUEUE!r} and "
        "deletes its rows afterwards. Run it against a database no one else is using."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--only",
            action="append",
            choices=WORKLOADS,
            dest="workloads",
            metavar="WORKLOAD",
            help=f"Run only this workload ({', '.join(WORKLOADS)}); repeat for several "
            "(default: all).",
        )
        parser.add_argument(
            "--tasks",
            type=int,
            default=_DEFAULTS.tasks,
            help="No-op tasks to drain (default: %(default)s).",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=_DEFAULTS.concurrency,
            help="--concurrency of each worker, and of the parallel fork floor "
            "(default: %(default)s).",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=_DEFAULTS.workers,
            help="pq_worker processes that drain together (default: %(default)s).",
        )
        parser.add_argument(
            "--enqueue-count",
            type=int,
            default=_DEFAULTS.enqueue_count,
            help="Single-row enqueue() calls to time (default: %(default)s).",
        )
        parser.add_argument(
            "--bulk-count",
            type=int,
            default=_DEFAULTS.bulk_count,
            help="Tasks in the timed enqueue_many() call (default: %(default)s).",
        )
        parser.add_argument(
            "--latency-samples",
            type=int,
            default=_DEFAULTS.latency_samples,
            help="Tasks enqueued one at a time to an idle worker (default: %(default)s).",
        )
        parser.add_argument(
            "--idle-seconds",
            type=float,
            default=_DEFAULTS.idle_seconds,
            help="Seconds to count an idle worker's commits (default: %(default)s).",
        )
        parser.add_argument(
            "--forks",
            type=int,
            default=_DEFAULTS.forks,
            help="fork+exit+wait rounds for the floor (default: %(default)s).",
        )
        parser.add_argument(
            "--worker-arg",
            action="append",
            dest="worker_args",
            default=[],
            metavar="FLAG",
            help="Extra flag for every pq_worker started, e.g. --worker-arg=-v0; repeat for "
            "several (default: none).",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print the report as JSON (default: a table)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            config = BenchConfig(
                workloads=tuple(options["workloads"] or WORKLOADS),
                tasks=options["tasks"],
                concurrency=options["concurrency"],
                workers=options["workers"],
                enqueue_count=options["enqueue_count"],
                bulk_count=options["bulk_count"],
                latency_samples=options["latency_samples"],
                idle_seconds=options["idle_seconds"],
                forks=options["forks"],
                worker_args=tuple(options["worker_args"]),
            )
        except ValueError as error:
            raise CommandError(str(error), returncode=2) from None
        progress = self.stderr.write if options["verbosity"] >= 1 else (lambda message: None)
        try:
            report = run(config, progress)
        except BenchError as error:
            raise CommandError(str(error)) from None
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:
            self.stdout.write(format_table(report))
