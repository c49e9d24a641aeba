"""Outcomes the worker has decided and the database has not yet taken.

An outcome stays here until a commit confirms it. While the database is away it waits,
oldest first, and goes out with the next batch (which the loop writes together with its
next claim, one commit for both). A batch the database refuses is written one outcome at
a time, so one unstorable outcome cannot hold up the others, and an outcome that cannot
be stored at all still lands, as a failure that says why.

While its outcome waits, the task still belongs to this worker: orphan recovery must not reap it.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from django_pq.store import worker as sql
from django_pq.store.worker import Outcome
from django_pq.worker.database import Database

logger = logging.getLogger("django_pq.worker")


class OutcomeBuffer:
    """The unwritten outcomes of one worker, and the retries that write them."""

    def __init__(self, db: Database, channel: str) -> None:
        self.db = db
        self.channel = channel
        self._waiting: list[Outcome] = []

    def __len__(self) -> int:
        return len(self._waiting)

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def add(self, outcome: Outcome) -> None:
        self._waiting.append(outcome)

    def task_ids(self) -> list[int]:
        """The tasks whose outcome waits here: still held by this worker, not orphans.

        Reaping one of them would run a finished task again, or lose its result.
        """
        return [outcome.task_id for outcome in self._waiting]

    def take(self) -> list[Outcome]:
        """Everything waiting, oldest first, as the next batch to write."""
        batch, self._waiting = self._waiting, []
        return batch

    def keep(self, batch: list[Outcome]) -> None:
        """Wait again with a batch the database did not take, ahead of what came since."""
        self._waiting = batch + self._waiting

    def finish_statement(self, outcomes: list[Outcome]) -> tuple[str, dict[str, Any]]:
        """The finish statement and its parameters for ``outcomes``."""
        return sql.FINISH_STATEMENT, sql.finish_params(outcomes, self.channel)

    def confirm(self, batch: list[Outcome], rows: list[tuple[Any, ...]]) -> None:
        """Note the outcomes the finish statement did not write (``rows``: the ones it did).

        Those are dropped, not retried: their run token is no longer the row's, so
        another verdict (the reaper's, a cancel's) or a newer run owns the row now.
        """
        written = {row[0] for row in rows}
        for outcome in batch:
            if outcome.task_id not in written:
                logger.warning(
                    "Outcome of task %s was refused: its run token is no longer current "
                    "(reaped or cancelled meanwhile)",
                    outcome.task_id,
                    extra={"task_id": outcome.task_id},
                )

    def write_one_by_one(self, batch: list[Outcome]) -> None:
        """Write each outcome in its own transaction, after the database refused them
        together. What a lost connection leaves unwritten waits here for the next turn."""
        for position, outcome in enumerate(batch):
            try:
                rows = self.db.execute("finish_one", *self.finish_statement([outcome]))
            except psycopg.Error as error:
                rows = self._write_unstorable(outcome, error)
            if rows is None:
                self.keep(batch[position:])
                return
            self.confirm([outcome], rows)

    def _write_unstorable(
        self, outcome: Outcome, error: psycopg.Error
    ) -> list[tuple[Any, ...]] | None:
        # The outcome itself is unstorable (say, a result Postgres rejects): keep the
        # verdict, drop what cannot be stored.
        fallback = Outcome(
            task_id=outcome.task_id,
            run_token=outcome.run_token,
            status="failed",
            # A failure keeps its cause; a result that cannot be stored is one.
            error_code=outcome.error_code if outcome.status == "failed" else "exception",
            error=f"The task's outcome could not be stored: {error}",
        )
        # A version parked on the row that cannot be applied (a hostile requeue) fails
        # the same way: it is discarded, so the verdict always lands.
        results = self.db.run_in_transaction(
            "finish_one",
            [
                (sql.DISCARD_REQUEUE, [outcome.task_id, outcome.run_token]),
                self.finish_statement([fallback]),
            ],
        )
        return None if results is None else results[-1]
