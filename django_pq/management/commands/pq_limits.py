"""``manage.py pq_limits``: the flow limits and the busy keys; sync, pause, resume."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_pq.exceptions import TaskRefused
from django_pq.limits import busy_keys, describe_limit, pause_key, resume_key, sync_limits
from django_pq.models import Limit


class Command(BaseCommand):
    help = (
        "Show the flow limits and the keys with work. --sync writes PQ_LIMITS to the "
        "database (workers do on start); --pause and --resume stop and restart keys. "
        "Exit codes: 0 done, 1 an invalid limit or key."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sync", action="store_true", help="Write PQ_LIMITS to pq_limits.")
        parser.add_argument("--pause", nargs="+", metavar="KEY", help="Pause these keys.")
        parser.add_argument(
            "--resume", nargs="+", metavar="KEY", help="Resume (and release) these keys."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["sync"]:
                written, deleted = sync_limits()
                self.stdout.write(f"{written} limits written, {deleted} deleted")
            if options["pause"]:
                self.stdout.write(f"paused: {', '.join(pause_key(*options['pause']))}")
            if options["resume"]:
                self.stdout.write(f"resumed: {', '.join(resume_key(*options['resume']))}")
        except TaskRefused as error:
            raise CommandError(str(error)) from None
        if options["sync"] or options["pause"] or options["resume"]:
            return
        self.stdout.write("Limits")
        for limit in Limit.objects.all():
            rate = f" rate={limit.rate} burst={limit.burst:g}" if limit.rate else ""
            order = f" ordered on_failure={limit.on_failure}" if limit.ordered else ""
            at_once = f" concurrency={limit.concurrency}" if limit.concurrency else ""
            self.stdout.write(f"  {limit.pattern}:{at_once}{rate}{order} ({limit.source})")
        self.stdout.write("Keys with work (most waiting first)")
        for key in busy_keys():
            state = " paused" if key.is_paused else " held" if key.is_held else ""
            self.stdout.write(
                f"  {key.key}: {describe_limit(key)}; running {key.running}, "
                f"waiting {key.waiting}{state}"
            )
