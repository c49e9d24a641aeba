"""``manage.py pq_sync_schedules``: create or update the schedules declared in code."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_pq.declared import sync_schedules
from django_pq.exceptions import TaskRefused


class Command(BaseCommand):
    help = (
        "Create or update the schedules declared with @pq.periodic and PQ_SCHEDULES. "
        "Pauses made in the admin are kept. -v 0 prints nothing but errors. "
        "Exit codes: 0 synced, 1 a declaration is invalid."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--prune",
            action="store_true",
            help="Also delete schedules that were declared in code but no longer are "
            "(schedules created in the admin are never touched). Default: keep them.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = sync_schedules(prune=options["prune"])
        except TaskRefused as error:
            raise CommandError(str(error)) from None
        if options["verbosity"] < 1:
            return
        for label, names in (
            ("created", report.created),
            ("updated", report.updated),
            ("unchanged", report.unchanged),
            ("removed", report.removed),
        ):
            for name in names:
                self.stdout.write(f"{label}: {name}")
        self.stdout.write(
            f"{len(report.created)} created, {len(report.updated)} updated, "
            f"{len(report.unchanged)} unchanged, {len(report.removed)} removed"
        )
