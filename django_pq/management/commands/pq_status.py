"""``manage.py pq_status``: the queue at a glance, for people and for health checks.

Exit codes: 0 when at least one live worker is seen, 1 when none is (so it can serve as a
health check of the worker fleet), 2 for bad usage.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from django_pq.limits import KeyNumbers, describe_limit
from django_pq.status import Snapshot, as_json, progress_fraction, snapshot

#: Exit code when no worker holds a live lease.
NO_LIVE_WORKER = 1


def _age(seconds: float) -> str:
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 120:
        return f"{sign}{seconds:.1f}s"
    if seconds < 7200:
        return f"{sign}{seconds / 60:.1f}m"
    if seconds < 172800:
        return f"{sign}{seconds / 3600:.1f}h"
    return f"{sign}{seconds / 86400:.1f}d"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)
    ]
    line = "  ".join(f"{{:<{width}}}" for width in widths)
    return [line.format(*headers).rstrip()] + [line.format(*row).rstrip() for row in rows]


def _flow_state(key: KeyNumbers) -> str:
    return "paused" if key.is_paused else "held by a failure" if key.is_held else ""


def render(state: Snapshot) -> str:
    """The human-readable report."""
    out: list[str] = []
    # Queues with unfinished tasks; the finished ones are the next section's.
    unfinished = [c for c in state.per_queue() if c.ready or c.scheduled or c.running or c.blocked]
    out.append("Queues")
    if unfinished:
        rows = [
            [
                c.queue,
                str(c.ready),
                str(c.scheduled),
                str(c.running),
                str(c.blocked),
                _age(state.oldest_ready_age[c.queue]) if c.queue in state.oldest_ready_age else "-",
            ]
            for c in unfinished
        ]
        out += _table(["queue", "ready", "scheduled", "running", "blocked", "oldest ready"], rows)
    else:
        out.append("  (no pending or running tasks)")
    if state.finished:
        out += ["", "Finished in the last hour"]
        out += _table(
            ["task", "status", "count", "avg duration"],
            [
                [f.name, f.status, str(f.count), _age(f.seconds / f.count) if f.count else "-"]
                for f in state.finished
            ],
        )
    out += ["", f"Running tasks ({len(state.running)})"]
    out += _table(
        ["id", "task", "queue", "attempt", "running for", "progress", "worker"],
        [
            [
                str(t.id),
                t.name,
                t.queue,
                str(t.attempt),
                _age(t.running_for),
                progress_fraction(t.progress_done, t.progress_total),
                t.worker_id or "-",
            ]
            for t in state.running
        ],
    )
    out += ["", f"Live workers ({len(state.workers)})"]
    out += _table(
        ["worker", "host:pid", "running", "heartbeat", "up", "queues"],
        [
            [
                w.id,
                f"{w.hostname}:{w.pid}",
                f"{w.running}/{w.concurrency}",
                f"{_age(w.heartbeat_age)} ago",
                _age(w.up_for),
                ",".join(w.queues) or "all",
            ]
            for w in state.workers
        ],
    )
    out += ["", "Schedules due next"]
    out += _table(
        ["schedule", "every", "next run", "due in"],
        [
            [
                f"{s.name}[{s.key}]" if s.key else s.name,
                s.every,
                s.next_run.isoformat(timespec="seconds"),
                _age(s.due_in),
            ]
            for s in state.schedules
        ],
    )
    if state.disabled_schedules:
        out += ["", f"Disabled schedules ({len(state.disabled_schedules)}): fix, then resume"]
        out += _table(
            ["schedule", "disabled at", "error"],
            [
                [
                    f"{s.name}[{s.key}]" if s.key else s.name,
                    s.disabled_at.isoformat(timespec="seconds"),
                    s.error,
                ]
                for s in state.disabled_schedules
            ],
        )
    if state.flow_keys:
        out += ["", "Flow keys (most waiting first)"]
        out += _table(
            ["key", "limit", "running", "waiting", "rate spent", "state"],
            [
                [
                    k.key,
                    describe_limit(k),
                    str(k.running),
                    str(k.waiting),
                    "-" if k.rate_spent is None else f"{k.rate_spent:.1f}",
                    _flow_state(k),
                ]
                for k in state.flow_keys
            ],
        )
    if not state.has_live_worker:
        out += ["", "No live worker: nothing will run. Start one with manage.py pq_worker."]
    return "\n".join(out)


class Command(BaseCommand):
    help = (
        "Show django-pq's queues (ready, scheduled, running, oldest ready task's age), running "
        "tasks, live workers, the schedules due next and those a worker disabled, and the "
        "flow keys with work. Exits 1 "
        "when no live worker is seen."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--json", action="store_true", help="Print one JSON object instead of tables."
        )
        parser.add_argument(
            "--running-limit",
            type=int,
            default=50,
            help="Show at most this many running tasks (default: 50).",
        )
        parser.add_argument(
            "--schedules",
            type=int,
            default=10,
            help="Show this many schedules due next, and disabled ones (default: 10).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        for flag in ("running_limit", "schedules"):
            if options[flag] < 0:
                self.stderr.write(f"--{flag.replace('_', '-')} must be >= 0.")
                raise SystemExit(2)
        state = snapshot(
            running_limit=options["running_limit"], schedule_limit=options["schedules"]
        )
        if options["json"]:
            self.stdout.write(json.dumps(as_json(state), indent=2, default=str))
        else:
            self.stdout.write(render(state))
        if not state.has_live_worker:
            raise SystemExit(NO_LIVE_WORKER)
