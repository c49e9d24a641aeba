"""The worker parent: one thread around one ``poll()``, forking a child per task.

It wakes on a NOTIFY, a child's pipe or exit, a signal, the next known ``run_at`` or
``next_run``, a deadline, or its heartbeat; then it records finished runs and claims as
many tasks as it has free slots in one transaction, forks one child per task, and
enforces deadlines and memory limits itself. Outcomes that cannot be written yet are kept
and retried until the database takes them.

An idle worker costs one transaction per heartbeat: the heartbeat also reports lost
tasks, cancel requests, the next due schedule and the next future task.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import gc
import logging
import math
import os
import random
import resource
import select
import signal
import socket
import time
import uuid
from types import FrameType
from typing import Any

import psycopg
from django.db import connections
from psycopg.types.json import Jsonb

from django_pq import __version__, notify
from django_pq.conf import pq_settings
from django_pq.store import worker as sql
from django_pq.store.worker import Claimed, Outcome
from django_pq.task_paths import preload_task_modules
from django_pq.worker.child import LeaseClock
from django_pq.worker.children import RunningChild, fork_child, kill_group, verdict
from django_pq.worker.config import WorkerConfig
from django_pq.worker.database import Database
from django_pq.worker.descendants import Descendants, become_subreaper
from django_pq.worker.faults import crash_point
from django_pq.worker.firing import fire_due
from django_pq.worker.outcome_buffer import OutcomeBuffer
from django_pq.worker.report import Report
from django_pq.worker.timers import NEVER, Timers, seconds_until

logger = logging.getLogger("django_pq.worker")

CHORES_PAUSE = 1.0
SHUTDOWN_FLUSH_TIMEOUT = 10.0
#: While the database is away or outcomes wait to be written, look again this soon.
RETRY_SOON = 0.2


class ExitCode(enum.IntEnum):
    """How ``pq_worker`` ended. Documented in docs/reference/commands.md."""

    OK = 0  #: stopped cleanly: drained after a signal, burst done, or --max-tasks reached
    ERROR = 1  #: an unexpected error in the worker itself
    USAGE = 2  #: a flag or setting was invalid
    TASKS_KILLED = 3  #: stopped by a signal and had to kill running tasks


class WorkerLoop:
    """One ``pq_worker`` process. ``run()`` blocks until the worker stops."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.id = str(uuid.uuid4())
        self.children: dict[int, RunningChild] = {}
        self.lease = LeaseClock()
        self.db = Database(
            config.database, config.channel, config.listen, self._on_notify, self._on_reconnect
        )
        self.unwritten = OutcomeBuffer(self.db, config.channel)
        self.timers = Timers.start(time.monotonic(), config.heartbeat_interval)
        self.started_tasks = 0
        self.signals_received = 0
        self.draining = False
        self.killed_at_shutdown = False
        self.registered = False
        self.should_claim = True
        self.claim_came_back_short = False
        self.flow_rounds = 0
        self.flow_in_use = True  # until a claim says otherwise
        self.flow_claim = sql.claim_statement(config)
        self.plain_claim = sql.plain_claim_statement(config)
        self.check_orphans = False
        self.cancel_hints: set[int] = set()  # task ids a notification named; not yet confirmed
        self.descendants = Descendants()
        self.logged_done = False
        self.clock_offset = 0.0  # database clock minus ours, from the last heartbeat
        self._wakeup_read, self._wakeup_write = os.pipe()

    # -- signals -----------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        os.set_blocking(self._wakeup_read, False)
        os.set_blocking(self._wakeup_write, False)
        signal.set_wakeup_fd(self._wakeup_write)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        # A Python-level handler, so child exits also write to the wakeup fd.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only flags here; the loop acts on them.
        self.signals_received += 1

    def _on_reconnect(self) -> None:
        # A reply lost with the old connection may hide a committed claim: look for rows
        # held under our id that no child of ours runs. And whatever was sent meanwhile
        # reached nobody: look at the queue, the schedules and the lease at once.
        now = time.monotonic()
        self.check_orphans = True
        self.should_claim = True
        self.timers.fire.set(now)
        self.timers.heartbeat.set(now)

    def _on_notify(self, payload: str) -> None:
        # A hint, never an authority (see django_pq.notify): each message only makes the
        # worker ask the database sooner.
        message = notify.parse(payload)
        if isinstance(message, notify.ScheduleChanged):
            self.timers.fire.set(time.monotonic())
        elif isinstance(message, notify.CancelRequested):
            if any(task.id == message.task_id for task in self._running_tasks()):
                self.cancel_hints.add(message.task_id)
        elif isinstance(message, notify.TaskReady) and self.config.serves(message.queue):
            delay = message.run_at - (time.time() + self.clock_offset)
            if delay > 0.005:
                # A future task: only move the timer (wall clocks may disagree a little;
                # the claim after the timer asks the database, which decides). A far-off
                # epoch moves nothing: the heartbeat reports the next task anyway.
                when = time.monotonic() + min(delay, self.config.heartbeat_interval)
                self.timers.next_task.bring_forward(when)
                logger.debug("Task due in %.3fs in queue %r: timer set", delay, message.queue)
            else:
                self.should_claim = True

    def _running_tasks(self) -> list[Claimed]:
        return [child.task for child in self.children.values() if child.task is not None]

    def _confirm_cancels(self) -> None:
        """Stop the children whose rows say they are to be cancelled, under their token."""
        hinted = [task for task in self._running_tasks() if task.id in self.cancel_hints]
        self.cancel_hints.clear()
        if not hinted:
            return
        rows = self.db.execute(
            "cancel_check",
            sql.CANCEL_REQUESTED,
            {
                "worker": self.id,
                "ids": [task.id for task in hinted],
                "tokens": [task.run_token for task in hinted],
            },
        )
        for task_id, token in rows or []:
            self._cancel(int(task_id), token)

    def _cancel(self, task_id: int, run_token: str) -> None:
        for child in self.children.values():
            task = child.task
            if task is not None and task.id == task_id and task.run_token == run_token:
                logger.info("Cancelling running task %s", task_id, extra={"task_id": task_id})
                child.stop("cancelled", "Cancelled while running.", self.config.kill_grace)

    # -- lifecycle ---------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; returns an :class:`ExitCode`."""
        self._install_signal_handlers()
        # The parent talks to the database only through self.db; Django's connections
        # are closed so no child ever inherits a live one.
        connections.close_all()
        # Descendants a task hides from its process group (setsid, double fork) become
        # ours, so they can be found and killed with the task.
        self.descendants.enabled = become_subreaper()
        preload_task_modules()
        # Everything loaded so far is shared with every child: keep the garbage collector
        # from touching (and so copying) those pages in each one.
        gc.freeze()
        logger.info(
            "Worker %s starting: %s", self.id, self.config.describe(), extra={"worker_id": self.id}
        )
        try:
            while self._step():
                pass
        finally:
            self._finish_up()
        if self.killed_at_shutdown:
            return ExitCode.TASKS_KILLED
        return ExitCode.OK

    def _step(self) -> bool:
        """One turn of the loop. Returns False when the worker should exit."""
        now = time.monotonic()
        self._collect_children()
        self._enforce_limits(now)
        if self.signals_received:
            self._shut_down(now)
            self._release_idle_children()
            if not self.children:
                return False
        if self.timers.chores_resume.due(now):
            try:
                self._database_chores(now)
            except psycopg.Error:
                # A statement the database refused for a reason no retry mends (a value
                # in some row it cannot process): log it, pause the chores a moment so a
                # refusal cannot spin the loop, and carry on, so no row stops the worker.
                # A lost connection never gets here.
                logger.exception("A database statement failed; the worker carries on")
                self.timers.chores_resume.set(now + CHORES_PAUSE)
        if not self._busy() and not self.signals_received and self._is_done():
            self._release_idle_children()
            if not self.children:
                return False
        self._wait(self._timeout(time.monotonic()))
        return True

    def _database_chores(self, now: float) -> None:
        if self.db.connect() and not self.registered:
            self._register()
        if self.registered and self.check_orphans:
            self._recover_orphans()
        if self.registered:
            self._heartbeat_if_due(now)
            self._confirm_cancels()
            if not self.signals_received:
                self._prune_if_due(now)
                self._fire_if_due(now)
            self._write_and_claim(now)

    def _busy(self) -> list[RunningChild]:
        return [child for child in self.children.values() if child.task is not None]

    def _release_idle_children(self) -> None:
        for child in self.children.values():
            if child.task is None:
                child.release()

    def _is_done(self) -> bool:
        reason = ""
        if self.config.max_tasks is not None and self.started_tasks >= self.config.max_tasks:
            reason = f"Reached --max-tasks={self.config.max_tasks}; stopping"
        elif (
            self.config.burst
            and self.claim_came_back_short
            and not self.unwritten
            # A claim again at once (limits held candidates back), a rate's next token or
            # a sequence's next task: ready work yet to come.
            and not self.should_claim
            and self.timers.flow.at == NEVER
        ):
            reason = "No ready task left (--burst); stopping"
        if reason and not self.logged_done:
            logger.info(reason)
            self.logged_done = True
        return bool(reason)

    def _register(self) -> None:
        params = {
            "id": self.id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "queues": Jsonb(list(self.config.queues)),
            "priorities": Jsonb(list(self.config.priorities)),
            "min_priority": self.config.min_priority,
            "concurrency": self.config.concurrency,
            "lease": self.config.lease,
            "version": __version__,
        }
        sent = time.monotonic()
        if self.db.execute("register", sql.REGISTER, params) is not None:
            self.registered = True
            self._renewed(sent)
            self.should_claim = True

    def _renewed(self, sent: float) -> None:
        # The database stamped the lease no earlier than `sent`, so this deadline is safe.
        self.timers.lease.set(sent + self.config.lease - self.config.lease_margin)
        self.lease.set(sent + self.config.lease - self.config.lease_margin / 2)

    def _finish_up(self) -> None:
        """Stop children still running, write what is unwritten (bounded), deregister."""
        for child in self.children.values():
            child.stop("shutdown", "The worker stopped before the task finished.", 0)
        deadline = time.monotonic() + SHUTDOWN_FLUSH_TIMEOUT
        while self.children and time.monotonic() < deadline:
            self._collect_children()
            if self.children:
                self._wait(0.05)
        self.descendants.kill_all()
        while self.unwritten and time.monotonic() < deadline:
            self._write_and_claim(time.monotonic(), claim=False)
            if self.unwritten:
                time.sleep(0.1)
        if self.registered:
            self.db.execute("deregister", sql.DEREGISTER, {"id": self.id})
        self.db.close()
        signal.set_wakeup_fd(-1)
        for fd in (self._wakeup_read, self._wakeup_write):
            os.close(fd)
        logger.info("Worker %s stopped", self.id, extra={"worker_id": self.id})

    def _shut_down(self, now: float) -> None:
        if not self.draining:
            self.draining = True
            self.timers.drain.set(now + self.config.drain_timeout)
            logger.info(
                "Stopping: no new tasks; draining %d running for up to %ss",
                len(self._busy()),
                self.config.drain_timeout,
            )
        if self.signals_received >= 2 or self.timers.drain.due(now):
            grace = 0.0 if self.signals_received >= 2 else self.config.kill_grace
            for child in self._busy():
                if not child.stop_reason:
                    self.killed_at_shutdown = True
                    child.stop(
                        "shutdown",
                        "The worker stopped before the task finished "
                        f"(drain timeout {self.config.drain_timeout}s).",
                        grace,
                    )

    # -- claiming and forking ----------------------------------------------------------

    def _claim_limit(self, now: float) -> int:
        """How many tasks to claim now: the free slots, if a claim is due at all."""
        if self.signals_received:
            return 0
        due = self.should_claim or (not self.config.listen and self.timers.poll.due(now))
        if self.timers.next_task.take(now):
            due = True
        if self.timers.flow.take(now):  # a limited key may start again: the claim decides
            due = True
            self.flow_rounds = 0
        free = self.config.concurrency - len(self._busy())
        if self.config.max_tasks is not None:
            free = min(free, self.config.max_tasks - self.started_tasks)
        return free if due and free > 0 else 0

    def _write_and_claim(self, now: float, claim: bool = True) -> None:
        """Record finished runs and claim new ones in one transaction (one commit)."""
        limit = self._claim_limit(now) if claim else 0
        batch = self.unwritten.take()
        if not batch and not limit:
            return
        statements: list[tuple[str, Any]] = []
        if batch:
            statements.append(self.unwritten.finish_statement(batch))
        if limit:
            # The plain claim while flow control has nothing to enforce (each claim's
            # reply says whether it has), the flow claim while it has.
            claim_sql = self.flow_claim if self.flow_in_use else self.plain_claim
            statements.append((claim_sql, sql.claim_params(self.config, self.id, limit)))
        if batch:
            crash_point("before_finish")
        name = "finish_claim" if batch and limit else "finish" if batch else "claim"
        try:
            results = self.db.run_in_transaction(name, statements)
        except psycopg.Error:
            # Something in the batch is unstorable; write it piece by piece, claim next turn.
            logger.exception("Could not record %d outcomes together", len(batch))
            self.unwritten.write_one_by_one(batch)
            return
        if results is None:  # the database is away: keep the outcomes, claim later
            self.unwritten.keep(batch)
            return
        if batch:
            self.unwritten.confirm(batch, results[0])
        if limit:
            self.should_claim = False
            self.timers.poll.set(now + self.config.poll_interval)
            claimed, hints = sql.claimed_rows(results[-1])
            if claimed:
                crash_point("after_claim")
            for task in sorted(claimed, key=lambda task: (-task.priority, task.id)):
                self._start(task)
            self.claim_came_back_short = len(claimed) < limit
            # A full claim suggests more ready work; a short one waits for a wake-up.
            self.should_claim = not self.claim_came_back_short
            self._follow_flow_hints(now, hints, short=self.claim_came_back_short)

    def _follow_flow_hints(self, now: float, hints: sql.FlowHints, *, short: bool) -> None:
        """After a claim: limits that held candidates back may hide claimable work behind
        them (the next round leaves those keys out), so claim again at once, a few rounds
        at most; a rate's next token or a sequence's next task sets the flow timer. A
        plain claim that learns flow control is in use claims again with the flow claim:
        it left keyed tasks behind."""
        if hints.in_use and not self.flow_in_use and short:
            self.should_claim = True
        self.flow_in_use = hints.in_use
        # Each claim knows the flow's next moment afresh (a key whose tasks are all gone
        # has none), so it replaces the last one.
        self.timers.flow.set(NEVER if hints.wait is None else now + max(hints.wait, 0.0))
        if short and hints.held_back and self.flow_rounds < sql.FLOW_ROUNDS:
            self.flow_rounds += 1
            self.should_claim = True
        elif not hints.held_back:
            self.flow_rounds = 0

    def _start(self, task: Claimed) -> None:
        # The parent never imports the module a row names: the allowed ``tasks`` modules
        # were preloaded before any fork, and any other module's top level (which may call
        # sys.exit() or os._exit(), hang, or start threads) runs in the child, where it can
        # fail that one task and nothing else. That import costs each such child a little;
        # the worker's life is worth more.
        max_runtime = _runtime_limit(task.max_runtime, self.config.max_runtime)
        task = dataclasses.replace(task, runtime_limit=max_runtime)  # the task's deadline
        idle = next((child for child in self.children.values() if child.is_idle), None)
        if idle is None or not idle.assign(task, max_runtime):
            idle = fork_child(
                task,
                self.lease,
                max_runtime,
                self.config.max_memory_mb,
                self.config.tasks_per_child,
                self.config.max_child_memory_mb,
            )
            self.children[idle.pid] = idle
        child = idle
        self.started_tasks += 1
        crash_point("after_fork")
        logger.info(
            "Started task %s %s (attempt %d/%d) in pid %d",
            task.id,
            task.name,
            task.attempts,
            task.max_attempts,
            child.pid,
            extra=_task_extra(task, pid=child.pid),
        )

    # -- watching children -------------------------------------------------------------

    def _collect_children(self) -> None:
        ended = self._collect_reports_and_exits()
        now = time.monotonic()
        if ended or self.timers.descendant_scan.due(now):
            self.timers.descendant_scan.restart(now)
            runs = {pid: c.task.run_token for pid, c in self.children.items() if c.task}
            self.descendants.observe(runs, self.children)
            self.descendants.kill_finished(set(runs.values()))

    def _collect_reports_and_exits(self) -> bool:
        """Record the reports and exits of children; whether any task or child ended."""
        ended = False
        for running in self.children.values():
            running.read_report()
            while running.task is not None and (report := running.take_report()) is not None:
                # A reused child lives on; what its task started must not.
                self.descendants.observe_children({running.pid: running.task.run_token})
                self._record(running, report, None, None)
                running.task, running.deadline = None, None
                running.tasks_done += 1
                if report.retiring:
                    running.release()
                self.should_claim = ended = True
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return ended
            if pid == 0:
                return ended
            ended = True
            child = self.children.pop(pid, None)
            if child is None:
                continue  # a stray descendant reparented to us (we are its subreaper)
            child.read_report()
            if not child.pipe_closed:
                os.close(child.report_fd)
            child.release()
            # Whatever the task left running dies with it: its process group, and the
            # descendants it moved out of that group, which were reparented to us.
            kill_group(child.pid)
            crash_point("after_child_exit")
            if child.task is not None:
                self._record(child, child.take_report(), status, usage)
            self.should_claim = True

    def _record(
        self,
        child: RunningChild,
        report: Report | None,
        status: int | None,
        usage: resource.struct_rusage | None,
    ) -> None:
        assert child.task is not None
        outcome = verdict(
            child.task,
            report,
            status,
            usage,
            stop_reason=child.stop_reason,
            stop_message=child.stop_message,
            error_max_length=self.config.error_max_length,
            retry_delay=self._retry_delay(child.task.attempts),
        )
        duration = time.monotonic() - child.started
        extra = _task_extra(
            child.task,
            duration=round(duration, 4),
            status=outcome.status,
            error_code=outcome.error_code,
        )
        if outcome.status == "completed":
            logger.info("Task %s completed in %.3fs", child.task.id, duration, extra=extra)
        else:
            logger.warning(
                "Task %s %s (%s) after %.3fs",
                child.task.id,
                outcome.status,
                outcome.error_code,
                duration,
                extra=extra,
            )
        self.unwritten.add(outcome)

    def _retry_delay(self, attempt: int) -> float:
        """Exponential backoff with jitter: base * 2^(attempt-1), capped, half of it random."""
        # The exponent is capped: any attempt count a row can hold must give a delay.
        growth: float = 2.0 ** min(max(attempt - 1, 0), 64)
        ceiling = min(self.config.retry_max_delay, self.config.retry_delay * growth)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _enforce_limits(self, now: float) -> None:
        check_memory = self.config.max_memory_mb is not None and self.timers.memory_check.tick(now)
        lease_lapsing = self.timers.lease.due(now)
        for child in self.children.values():
            child.escalate(now)
            if child.stop_reason or child.task is None:
                continue
            if lease_lapsing:
                child.stop(
                    "worker_lost",
                    "The worker could not renew its lease (database "
                    "unreachable), so it stopped the task before another worker "
                    "could take it over.",
                    0,
                )
            elif child.deadline is not None and now >= child.deadline:
                limit = child.deadline - child.started
                child.stop(
                    "timeout",
                    f"The task ran past its max_runtime of {limit:g}s.",
                    self.config.kill_grace,
                )
            elif check_memory and self.config.max_memory_mb is not None:
                rss = child.rss_bytes()
                if rss is not None and rss > self.config.max_memory_mb * 1024 * 1024:
                    child.stop(
                        "memory",
                        f"The task exceeded {self.config.max_memory_mb:g} MB "
                        f"(resident size {rss / 1048576:.0f} MB).",
                        0,
                    )

    # -- database chores ---------------------------------------------------------------

    def _heartbeat_if_due(self, now: float) -> None:
        # A future task's timer asks the database first: the timer was set by this
        # worker's wall clock, which may have moved since the last heartbeat measured it.
        # A claim that came too early would leave the task until the next heartbeat.
        task_timer_due = self.timers.next_task.due(now)
        if not (self.timers.heartbeat.due(now) or task_timer_due):
            return
        if task_timer_due:
            # The answer below sets it again; a NOTIFY read while the statement runs may
            # bring it forward meanwhile, and must not be overwritten.
            self.timers.next_task.set(NEVER)
        params = {
            "id": self.id,
            "lease": self.config.lease,
            **sql.claim_params(self.config, self.id, 0),
        }
        rows = self.db.execute("heartbeat", sql.heartbeat_statement(self.config), params)
        if not rows:
            self.timers.heartbeat.failed(now)
            if task_timer_due:  # unanswered: claim anyway, the claim decides
                self.timers.next_task.bring_forward(now)
            return
        self.timers.heartbeat.succeeded(now)
        renewed, cancels, lost, to_schedule, task_ready, to_task, db_epoch = rows[0]
        self.clock_offset = float(db_epoch) - time.time()
        if to_schedule is not None:
            self.timers.fire.bring_forward(now + max(float(to_schedule), 0.0))
        # The safety net under NOTIFY: ready work is claimed, and the earliest future task
        # gets the timer. Two separate answers, so that claiming the ready work cannot use
        # up the timer of a task due later.
        if task_ready:
            self.should_claim = True
        if to_task is not None:
            self.timers.next_task.bring_forward(now + max(float(to_task), 0.0))
        if task_timer_due:
            logger.debug(
                "Task timer ran out; by the database: ready=%s, next in %s s", task_ready, to_task
            )
        if lost and not self.signals_received:
            self._reap([(int(task_id), token) for task_id, token in lost])
        if renewed:
            self._renewed(now)
        else:
            logger.error(
                "Worker %s lost its lease (stalled or reaped); stopping its tasks "
                "and registering again",
                self.id,
            )
            for child in self._busy():
                child.stop("worker_lost", "The worker lost its lease while running the task.", 0)
            self.registered = False
        for task_id, token in cancels or []:
            self._cancel(int(task_id), token)

    def _recover_orphans(self) -> None:
        """Finish tasks claimed under our id whose claim reply never reached us."""
        # Ours too: the tasks whose outcome waits to be written. Reaping those would run a
        # finished task again, or lose its result.
        mine = [task.id for task in self._running_tasks()] + self.unwritten.task_ids()
        rows = self.db.execute("orphans", sql.ORPHANS, {"worker": self.id, "mine": mine})
        if rows is None:
            return
        self.check_orphans = False
        if rows:
            logger.warning(
                "Found %d tasks claimed but never started (connection lost mid-claim)", len(rows)
            )
            self._reap([(int(task_id), token) for task_id, token in rows])

    def _reap(self, lost: list[tuple[int, str]]) -> None:
        """Finish the running tasks of dead workers (re-queue those with attempts left)."""
        outcomes = [
            Outcome(
                task_id=task_id,
                run_token=token,
                status="failed",
                error_code="worker_lost",
                error="The worker running this task stopped renewing its lease.",
                retry_delay=self._retry_delay(1),
            )
            for task_id, token in lost
        ]
        crash_point("in_reaper")
        logger.warning(
            "Reaping %d tasks of lost workers: %s",
            len(lost),
            ", ".join(str(task_id) for task_id, _ in lost),
        )
        try:
            self.db.execute("reap", *self.unwritten.finish_statement(outcomes))
        except psycopg.Error:
            # One of the rows cannot take the verdict as it is (say, a hostile parked
            # version): write them one by one, so each lands or fails alone.
            logger.exception("Could not reap %d tasks together", len(outcomes))
            self.unwritten.write_one_by_one(outcomes)

    def _fire_if_due(self, now: float) -> None:
        if not self.timers.fire.due(now) or not self.db.is_connected:
            return
        fired: list[float | None] = []
        with self.db.transaction("fire") as conn:
            if conn is not None:
                fired.append(fire_due(conn, self.config.channel, pq_settings.MAX_ATTEMPTS))
        if not fired:  # the connection was lost: reconnecting looks again
            return
        seconds = fired[0]
        # Without a due schedule, the heartbeat (or a schedule-changed message) sets the timer.
        self.timers.fire.set(NEVER if seconds is None else time.monotonic() + max(seconds, 0.01))

    def _prune_if_due(self, now: float) -> None:
        if self.config.retention is None or not self.timers.prune.tick(now):
            return
        batch, deadline = 500, now + 1.0
        while time.monotonic() < deadline:
            deleted = self.db.execute(
                "prune_tasks", sql.PRUNE_TASKS, {"retention": self.config.retention, "batch": batch}
            )
            if deleted is None:
                return
            if len(deleted) < batch:
                break
        self.db.execute("prune_workers", sql.PRUNE_WORKERS)

    # -- waiting -----------------------------------------------------------------------

    def _timeout(self, now: float) -> float:
        busy, timers = self._busy(), self.timers
        moments = [timers.drain.at]
        if busy:  # the children are watched whatever else waits
            moments.append(timers.lease.at)
            if self.config.max_memory_mb is not None:
                moments.append(timers.memory_check.at)
            for child in self.children.values():
                moments += [m for m in (child.deadline, child.kill_at) if m is not None]
        if not timers.chores_resume.due(now):  # the database chores pause after a refusal
            return seconds_until(now, timers.chores_resume.at, *moments)
        if self.should_claim and len(busy) < self.config.concurrency and self.registered:
            return 0.0
        moments += [timers.heartbeat.at, timers.fire.at, timers.next_task.at, timers.flow.at]
        if not self.config.listen:
            moments.append(timers.poll.at)
        if not self.db.is_connected or self.unwritten:
            moments.append(now + RETRY_SOON)
        return seconds_until(now, *moments)

    def _wait(self, timeout: float) -> None:
        poller = select.poll()
        poller.register(self._wakeup_read, select.POLLIN)
        db_fd = self.db.fileno()
        if db_fd is not None:
            poller.register(db_fd, select.POLLIN)
        for child in self.children.values():
            if not child.pipe_closed:
                poller.register(child.report_fd, select.POLLIN)
        with contextlib.suppress(InterruptedError):
            poller.poll(timeout * 1000)
        try:
            while os.read(self._wakeup_read, 512):
                pass
        except BlockingIOError:
            pass
        self.db.drain_notifications()


def _runtime_limit(from_row: float | None, default: float | None) -> float | None:
    """The task's own max_runtime when it is a usable limit, else the worker's.

    A row may hold anything the column admits: NaN, infinity, zero or a negative number
    mean "not set" here, never "no limit".
    """
    if from_row is not None and math.isfinite(from_row) and from_row > 0:
        return from_row
    return default


def _task_extra(task: Claimed, **more: Any) -> dict[str, Any]:
    return {
        "task_id": task.id,
        "task_name": task.name,
        "queue": task.queue,
        "attempt": task.attempts,
        **more,
    }
