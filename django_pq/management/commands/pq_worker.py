"""``manage.py pq_worker``: flags in, a validated config, then the worker loop."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, SystemCheckError
from django.db import DatabaseError

from django_pq.declared import sync_schedules
from django_pq.exceptions import TaskRefused
from django_pq.limits import sync_limits
from django_pq.worker import ConfigError, ExitCode, WorkerConfig, WorkerLoop
from django_pq.worker.config import parse_priorities, parse_priority

_VERBOSITY_LEVELS = {0: logging.ERROR, 1: logging.INFO, 2: logging.DEBUG, 3: logging.DEBUG}


class Command(BaseCommand):
    help = (
        "Run a django-pq worker: claim ready tasks with SKIP LOCKED and run each in its own "
        "forked process. SIGTERM/SIGINT drain; a second signal stops at once. Exit codes: "
        "0 stopped cleanly, 1 worker error, 2 bad flag or setting, 3 had to kill tasks."
    )
    requires_system_checks: list[str] = []  # checks run below, without touching the database

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--concurrency",
            type=int,
            default=os.cpu_count() or 1,
            help="Tasks run at once, each in its own process (default: CPU count, %(default)s).",
        )
        parser.add_argument(
            "--queue",
            action="append",
            dest="queues",
            default=[],
            metavar="NAME",
            help="Only claim from this queue; repeat for several (default: every queue).",
        )
        parser.add_argument(
            "--priority",
            action="append",
            dest="priorities",
            default=[],
            metavar="LEVEL",
            help="Only claim this priority (batch, low, normal, high, critical or 0..100); "
            "repeat for several (default: all).",
        )
        parser.add_argument(
            "--min-priority",
            metavar="LEVEL",
            help="Only claim tasks of this priority or higher (default: no minimum).",
        )
        parser.add_argument(
            "--max-runtime",
            type=float,
            metavar="SECONDS",
            help="Limit for tasks without their own max_runtime (default: PQ_MAX_RUNTIME).",
        )
        parser.add_argument(
            "--max-memory",
            type=float,
            dest="max_memory_mb",
            metavar="MB",
            help="Resident memory limit per task process (default: PQ_MAX_MEMORY).",
        )
        parser.add_argument(
            "--drain-timeout",
            type=float,
            metavar="SECONDS",
            help="After SIGTERM, let running tasks finish this long (default: PQ_DRAIN_TIMEOUT).",
        )
        parser.add_argument(
            "--poll-interval",
            type=float,
            metavar="SECONDS",
            help="Seconds between polls for ready tasks with --no-listen; with LISTEN on, "
            "notifications and the heartbeat wake the worker (default: PQ_POLL_INTERVAL).",
        )
        parser.add_argument(
            "--no-listen",
            action="store_false",
            dest="listen",
            default=None,
            help="Do not LISTEN (behind a pooler in transaction mode); poll only.",
        )
        parser.add_argument(
            "--burst",
            action="store_true",
            help="Exit 0 once no ready task is left (default: run until stopped).",
        )
        parser.add_argument(
            "--max-tasks",
            type=int,
            metavar="N",
            help="Exit 0 after starting N tasks (default: no limit).",
        )
        parser.add_argument(
            "--tasks-per-child",
            type=int,
            default=1,
            metavar="N",
            help="Run up to N tasks in turn in one forked child before replacing it "
            "(default: %(default)s, a fresh fork per task). Timeouts, crashes and memory "
            "limits still stop only that child.",
        )
        parser.add_argument(
            "--max-child-memory",
            type=float,
            dest="max_child_memory_mb",
            metavar="MB",
            help="With --tasks-per-child, replace a child early once its resident size "
            "passes this after a task (default: no limit).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self._configure_logging(options["verbosity"])
        try:
            self.check(display_num_errors=False, fail_level=logging.ERROR)
        except SystemCheckError as error:
            # A bad PQ_* setting is a usage error like a bad flag.
            raise CommandError(str(error), returncode=ExitCode.USAGE) from None
        try:
            config = WorkerConfig.from_settings(
                concurrency=options["concurrency"],
                queues=tuple(options["queues"]),
                priorities=parse_priorities(options["priorities"]),
                min_priority=None
                if options["min_priority"] is None
                else parse_priority(options["min_priority"], "--min-priority"),
                max_runtime=options["max_runtime"],
                max_memory_mb=options["max_memory_mb"],
                drain_timeout=options["drain_timeout"],
                poll_interval=options["poll_interval"],
                listen=options["listen"],
                burst=options["burst"] or None,
                max_tasks=options["max_tasks"],
                tasks_per_child=options["tasks_per_child"],
                max_child_memory_mb=options["max_child_memory_mb"],
            )
        except ConfigError as error:
            raise CommandError(str(error), returncode=ExitCode.USAGE) from None
        try:
            sync_limits()  # PQ_LIMITS as this deploy's settings say
            sync_schedules()  # declared schedules are current however the deploy ran
        except DatabaseError as error:
            # The worker waits for the database anyway; the schedules were synced on deploy.
            logging.getLogger("django_pq.worker").warning(
                "Could not sync PQ_LIMITS and declared schedules (%s); starting without it",
                error,
            )
        except TaskRefused as error:
            raise CommandError(
                f"A declared schedule or limit is invalid: {error}", returncode=ExitCode.USAGE
            ) from None
        sys.exit(WorkerLoop(config).run())

    def _configure_logging(self, verbosity: int) -> None:
        logger = logging.getLogger("django_pq")
        logger.setLevel(_VERBOSITY_LEVELS.get(verbosity, logging.INFO))
        if not logger.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(message)s")
            )
            logger.addHandler(handler)
