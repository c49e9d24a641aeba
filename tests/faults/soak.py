"""The chaos soak: real workers for N minutes under continuous faults, then the figures.

    python -m tests.faults.soak --minutes 30 --output soak.json

Without ``--database-url`` it starts a private throwaway PostgreSQL (never the machine's
shared server), migrates it, and restarts it during the run. Throughout, a producer
enqueues ledger tasks through the public API (a third with ``max_attempts=3``), two
schedules fire every second, and the injector does, every ``--fault-interval`` seconds
on average, one of: ``kill -9`` a worker (restarted at once), ``pg_terminate_backend`` a
worker's connection, write hostile rows (``tests/faults/inputs.py``) or send hostile
notifications; plus a PostgreSQL restart every ``--restart-every`` minutes (at least one).

At the end it stops the faults, lets the workers drain, removes the hostile rows and
judges the healthy ones with the fault suite's invariants (``conftest.judge``): lost,
duplicated beyond the allowed retries (from the run ledger), stuck running past the
lease, plus worker exits that were not our own ``kill -9`` (an input or a fault took a
worker down). It prints the figures, writes them as JSON, and exits 1 if any invariant
broke.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HEALTHY_TASK = "tests.testapp.tasks:ledger"
FAULT_KINDS = ("kill", "terminate", "rows", "notify")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the run (30)")
    parser.add_argument(
        "--database-url",
        default="",
        help="use this database instead of a throwaway cluster (no PostgreSQL restarts then)",
    )
    parser.add_argument("--workers", type=int, default=4, help="pq_worker processes (4)")
    parser.add_argument("--concurrency", type=int, default=2, help="per worker (2)")
    parser.add_argument("--rate", type=float, default=8.0, help="tasks enqueued a second (8)")
    parser.add_argument(
        "--fault-interval", type=float, default=2.0, help="mean seconds between faults (2)"
    )
    parser.add_argument(
        "--restart-every", type=float, default=10.0, help="minutes between PostgreSQL restarts"
    )
    parser.add_argument(
        "--faults",
        default=",".join(FAULT_KINDS),
        help=f"comma-separated kinds to inject, besides the restarts ({','.join(FAULT_KINDS)})",
    )
    parser.add_argument("--seed", type=int, default=12, help="random seed (12)")
    parser.add_argument("--output", default="pq-soak-figures.json", help="where to write JSON")
    options = parser.parse_args(argv)
    unknown = set(options.faults.split(",")) - set(FAULT_KINDS) - {""}
    if unknown:
        parser.error(f"--faults: unknown kinds {sorted(unknown)}; choose from {FAULT_KINDS}")
    return options


class Soak:
    """One run: the database, the workers, the producer and the injector."""

    def __init__(self, options: argparse.Namespace, target: Any) -> None:
        from tests.faults.conftest import Fleet

        self.options = options
        self.target = target
        self.rng = random.Random(options.seed)
        self.fleet = Fleet()
        self.faults: Counter[str] = Counter()
        self.hostile: Counter[str] = Counter()
        self.exits: list[dict[str, Any]] = []
        self.hostile_tasks: list[int] = []
        self.hostile_schedules: list[int] = []
        self.fake_workers: list[str] = []
        self.stuck_seen = 0
        self.slots: list[Any] = []

    # -- workers ------------------------------------------------------------------------

    def start_worker(self) -> Any:
        from tests.faults.inputs import ALLOWED_MODULES

        return self.fleet.start(
            self.target,
            "--concurrency",
            str(self.options.concurrency),
            settings={"PQ_ALLOWED_MODULES": ALLOWED_MODULES},
        )

    def supervise(self) -> None:
        """Restart workers that exited by themselves, noting why (our kills restart at once)."""
        for position, worker in enumerate(self.slots):
            if worker.is_alive():
                continue
            lines = [line for line in worker.output().splitlines() if line.strip()]
            cause = next(
                (line for line in reversed(lines) if "Error" in line or "Exception" in line),
                lines[-1] if lines else "",
            )
            self.exits.append({"code": worker.process.returncode, "cause": cause[:300]})
            self.slots[position] = self.start_worker()

    # -- faults -------------------------------------------------------------------------

    def kill_one(self) -> None:
        position = self.rng.randrange(len(self.slots))
        self.slots[position].kill(as_fault=False)
        self.slots[position] = self.start_worker()
        self.faults["worker kill -9"] += 1

    def terminate_one(self) -> None:
        rows = self.target.query(
            """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE application_name LIKE 'pq_worker:%%' ORDER BY random() LIMIT 1"""
        )
        self.faults["worker connection terminated"] += len(rows)

    def restart_postgres(self) -> None:
        cluster = self.target.cluster
        mode = self.rng.choice(["fast", "immediate"])
        cluster.restart(mode)
        self.faults[f"postgres restart ({mode})"] += 1

    def hostile_rows(self) -> None:
        from tests.faults.inputs import build_row, insert, random_chooser

        choose = random_chooser(self.rng, oddness=0.2)
        with contextlib.closing(self.target.connect()) as conn:
            table = self.rng.choice(["pq_tasks", "pq_tasks", "pq_periodic", "pq_workers"])
            row = build_row(table, choose)
            fake = self.rng.choice(self.fake_workers) if self.fake_workers else None
            if not insert(conn, row, fake):
                self.hostile["rows refused by Postgres"] += 1
                return
            self.hostile[f"{table} rows written"] += 1
            {
                "pq_tasks": self.hostile_tasks,
                "pq_periodic": self.hostile_schedules,
                "pq_workers": self.fake_workers,
            }[table].append(row.id)
            if table == "pq_periodic":
                conn.execute("SELECT pg_notify('django_pq', 's:')")
        self.faults["hostile row"] += 1

    def hostile_notification(self) -> None:
        from tests.faults.inputs import CANCEL_HEALTHY, ODD_NOTIFICATIONS, notify

        payload = self.rng.choice(ODD_NOTIFICATIONS)
        if payload == CANCEL_HEALTHY:
            running = self.target.query(
                "SELECT id FROM pq_tasks WHERE status = 'running' AND name = %s LIMIT 1",
                [HEALTHY_TASK],
            )
            payload = f"c:{running[0][0]}" if running else "c:1"
        with contextlib.closing(self.target.connect()) as conn:
            self.hostile["notifications sent"] += notify(conn, "django_pq", payload)
        self.faults["hostile notification"] += 1

    def inject(self) -> None:
        kinds = [kind for kind in self.options.faults.split(",") if kind]
        if not kinds:
            return
        kind = self.rng.choice(kinds)
        action = {
            "kill": self.kill_one,
            "terminate": self.terminate_one,
            "rows": self.hostile_rows,
            "notify": self.hostile_notification,
        }[kind]
        try:
            action()
        except Exception as error:  # the database restarting under us: try again later
            import psycopg

            if not isinstance(error, psycopg.Error):
                raise
            self.faults["injections that met a restarting database"] += 1

    def sample_stuck(self) -> None:
        """Healthy rows still running for a worker whose lease lapsed past the bound."""
        from tests.faults.conftest import REAP_BOUND

        with contextlib.suppress(Exception):
            [(stuck,)] = self.target.query(
                """SELECT count(*) FROM pq_tasks t LEFT JOIN pq_workers w ON w.id = t.worker_id
                   WHERE t.status = 'running' AND t.name = %s AND NOT t.id = ANY(%s)
                     AND (w.id IS NULL OR w.stopped_at IS NOT NULL
                          OR w.lease_expires_at < now() - make_interval(secs => %s))""",
                [HEALTHY_TASK, self.hostile_tasks, REAP_BOUND + 10],
            )
            self.stuck_seen = max(self.stuck_seen, int(stuck))

    # -- the run ------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from tests.faults.conftest import helper_output, run_helper, schedule_ledger

        options = self.options
        seconds = options.minutes * 60
        self.slots = [self.start_worker() for _ in range(options.workers)]
        schedules = [
            schedule_ledger(self.target, 1.0, seconds=0.05),
            schedule_ledger(self.target, 1.0, seconds=0.3, max_concurrent=None),
        ]
        producer = run_helper(
            self.target,
            "stream",
            "--seconds",
            str(seconds),
            "--rate",
            str(options.rate),
            "--key",
            "soak",
            "--seed",
            str(options.seed),
            marker=self.fleet.marker,
        )
        started = time.monotonic()
        restarts_at = self._restart_times(seconds)
        while time.monotonic() - started < seconds:
            time.sleep(self.rng.expovariate(1 / options.fault_interval))
            self.supervise()
            if restarts_at and time.monotonic() - started >= restarts_at[0]:
                restarts_at.pop(0)
                self.restart_postgres()
            else:
                self.inject()
            self.sample_stuck()
        out, err = helper_output(producer)
        if producer.returncode != 0:
            raise RuntimeError(f"the producer failed:\n{err.decode(errors='replace')[-3000:]}")
        produced = json.loads(out.decode().strip().splitlines()[-1])
        return self.finish(produced, schedules, time.monotonic() - started)

    def _restart_times(self, seconds: float) -> list[float]:
        if self.target.cluster is None:
            return []
        every = self.options.restart_every * 60
        first = min(seconds * 0.4, every)
        return [first + n * every for n in range(int((seconds - first) // every) + 1)]

    def finish(
        self, produced: dict[str, Any], schedules: list[int], elapsed: float
    ) -> dict[str, Any]:
        from tests.faults.conftest import judge

        target = self.target
        # Faults stop here; let the healthy work drain with live workers.
        target.query(
            "UPDATE pq_periodic SET active = false WHERE id = ANY(%s) OR id = ANY(%s)",
            [schedules, self.hostile_schedules],
        )
        drained = self._drain(produced["ids"])
        self.supervise()
        self.fleet.stop_all()
        # The hostile rows were judged by the workers' survival; the ledger judges the rest.
        target.query(
            """DELETE FROM pq_tasks WHERE id = ANY(%s) OR periodic_id = ANY(%s)
                   OR name <> %s OR (periodic_id IS NULL AND NOT id = ANY(%s))""",
            [self.hostile_tasks, self.hostile_schedules, HEALTHY_TASK, produced["ids"]],
        )
        target.query("DELETE FROM pq_periodic WHERE id = ANY(%s)", [self.hostile_schedules])
        target.query("DELETE FROM pq_workers WHERE id::text = ANY(%s)", [self.fake_workers])
        retrying = set(produced["retrying"])
        allowed = {task_id: 3 for task_id in retrying}
        verdict = judge(target, runs_allowed=allowed, expected_ids=produced["ids"])
        fired = target.query(
            "SELECT count(*) FROM pq_tasks WHERE periodic_id = ANY(%s)", [schedules]
        )[0][0]
        input_exits = len(self.exits)
        figures = {
            "minutes": round(elapsed / 60, 2),
            "workers": self.options.workers,
            "tasks enqueued (API)": len(produced["ids"]),
            "tasks enqueued with max_attempts=3": len(retrying),
            "enqueues cut off by a fault (unconfirmed)": produced["unconfirmed"],
            "tasks fired by schedules": fired,
            "tasks by status": dict(verdict.statuses),
            "failed by error_code": dict(verdict.error_codes),
            "runs recorded": verdict.runs,
            "faults injected": dict(self.faults),
            "hostile inputs": dict(self.hostile),
            "lost": len(verdict.lost),
            "duplicated": verdict.duplicated,
            "stuck running past the lease": max(verdict.stuck, self.stuck_seen),
            "worker exits not caused by our kill -9": input_exits,
            "worker exit causes": sorted({exit["cause"] for exit in self.exits})[:20],
            "drained": drained,
            "violations": verdict.violations[:50],
        }
        figures["ok"] = bool(
            drained
            and not verdict.violations
            and figures["stuck running past the lease"] == 0
            and input_exits == 0
        )
        return figures

    def _drain(self, ids: list[int]) -> bool:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            self.supervise()
            with contextlib.suppress(Exception):
                [(left,)] = self.target.query(
                    """SELECT count(*) FROM pq_tasks WHERE name = %s AND NOT id = ANY(%s)
                       AND (status = 'running' OR (status = 'pending'
                            AND run_at <= now() + interval '1 minute'))""",
                    [HEALTHY_TASK, self.hostile_tasks],
                )
                if left == 0:
                    return True
            time.sleep(0.5)
        return False


def _throwaway_database() -> Any:
    from devdb import ThrowawayPostgres

    # Durable (fsync and synchronous commit on): an immediate restart is a crash, and a
    # cluster that acknowledged commits it had not flushed would lose them by itself.
    cluster = ThrowawayPostgres(fast=False)
    cluster.start()
    cluster.destroy_when_gone(os.getpid())
    return cluster


def main(argv: list[str] | None = None) -> int:
    """Run the soak; 0 when every invariant held, 1 otherwise."""
    options = _arguments(argv)
    repo = Path(__file__).resolve().parents[2]
    # The workers' logs and markers go into a directory of the soak's own, removed at the
    # end: a run leaves nothing in the machine's temporary directory.
    scratch = tempfile.mkdtemp(prefix="pq-soak-")
    os.chmod(scratch, 0o755)  # the throwaway cluster inside it runs as the postgres user
    tempfile.tempdir = scratch
    os.environ["TMPDIR"] = scratch
    try:
        return _soak(options, repo)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _soak(options: argparse.Namespace, repo: Path) -> int:
    cluster = None if options.database_url else _throwaway_database()
    url = options.database_url or cluster.url
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    env["PYTHONPATH"] = str(repo)
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--noinput", "-v", "0"],
        cwd=repo,
        env=env,
        check=True,
        timeout=300,
    )
    os.environ.update(DATABASE_URL=url, DJANGO_SETTINGS_MODULE="tests.settings")
    import django

    django.setup()
    from tests.faults.conftest import LEDGER_TABLE, Target, kill_marked

    target = Target(url, cluster)
    if options.database_url:  # a given database starts empty of pq rows, like a test
        target.query(
            f"TRUNCATE pq_tasks, pq_periodic, pq_workers, {LEDGER_TABLE} RESTART IDENTITY CASCADE"
        )
    soak = Soak(options, target)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))
    try:
        figures = soak.run()
    finally:
        soak.fleet.stop_all()
        kill_marked(soak.fleet.marker)
        if cluster is not None:
            cluster.destroy()
    text = json.dumps(figures, indent=2, sort_keys=True, ensure_ascii=False)
    Path(options.output).write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
