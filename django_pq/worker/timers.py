"""The moments the worker loop waits for, each under its name, on the monotonic clock.

The loop asks each one whether it is due and hands the nearest ones to ``poll()`` as its
timeout. Nothing here reads a clock: the loop passes ``now``, so each rule is a plain
function of the time it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: A deadline that is not set: never due, and no wait ever ends for it.
NEVER = math.inf

#: How often the loop looks at the children's memory and at the descendants they left.
MEMORY_CHECK_INTERVAL = 0.25
#: How often old finished tasks and long-dead workers are deleted (with a retention set).
PRUNE_INTERVAL = 300.0
#: After a failed heartbeat, try again this soon, doubling per failure up to a quarter of
#: the heartbeat interval: a lost connection must not cost a whole interval of the lease.
HEARTBEAT_RETRY = 0.05


class Deadline:
    """One moment when something is due; :data:`NEVER` while nothing is."""

    __slots__ = ("at",)

    def __init__(self, at: float = NEVER) -> None:
        self.at = at

    def __repr__(self) -> str:
        return f"{type(self).__name__}(at={self.at!r})"

    def due(self, now: float) -> bool:
        """Whether the moment has come."""
        return now >= self.at

    def set(self, at: float) -> None:
        self.at = at

    def bring_forward(self, at: float) -> None:
        """Make it due at ``at`` if that is sooner; a later moment changes nothing."""
        self.at = min(self.at, at)

    def take(self, now: float) -> bool:
        """Whether it is due; a due deadline is used up (:data:`NEVER` until set again)."""
        if not self.due(now):
            return False
        self.at = NEVER
        return True


class Every(Deadline):
    """A deadline that comes round every ``interval`` seconds, counted from its last turn."""

    __slots__ = ("interval",)

    def __init__(self, interval: float, at: float) -> None:
        super().__init__(at)
        self.interval = interval

    def restart(self, now: float) -> None:
        """Due again one interval from ``now``."""
        self.at = now + self.interval

    def tick(self, now: float) -> bool:
        """Whether it is due; if so it restarts from ``now``."""
        if not self.due(now):
            return False
        self.restart(now)
        return True


class Heartbeat(Deadline):
    """When to renew the lease: every ``interval`` while renewals work, and after a failed
    one soon, backing off (see :data:`HEARTBEAT_RETRY`)."""

    __slots__ = ("failures", "interval")

    def __init__(self, interval: float, at: float) -> None:
        super().__init__(at)
        self.interval = interval
        self.failures = 0  # heartbeats failed in a row

    def succeeded(self, now: float) -> None:
        self.failures = 0
        self.at = now + self.interval

    def failed(self, now: float) -> None:
        # Waiting a whole interval would spend the lease for nothing.
        self.failures += 1
        retry = HEARTBEAT_RETRY * 2 ** min(self.failures, 10)
        self.at = now + min(retry, self.interval / 4)


@dataclass
class Timers:
    """Every moment the worker loop waits for, by name. :meth:`start` gives the first ones."""

    #: Without LISTEN: the next claim by polling.
    poll: Deadline
    #: A future task (named by a NOTIFY or the heartbeat) becomes ready: claim then.
    next_task: Deadline
    #: A key its flow limit held back may start again (a rate's next token): claim then.
    flow: Deadline
    heartbeat: Heartbeat
    #: The next due schedule (NEVER when none is known; the heartbeat reports one).
    fire: Deadline
    prune: Every
    memory_check: Every
    descendant_scan: Every
    #: After a statement the database refused, the chores pause until then.
    chores_resume: Deadline
    #: Running children are stopped here unless the lease is renewed before.
    lease: Deadline
    #: After a stop signal: running tasks are stopped here if they have not finished.
    drain: Deadline

    @classmethod
    def start(cls, now: float, heartbeat_interval: float) -> Timers:
        """A worker's timers at start: register, claim, fire and look around at once."""
        return cls(
            poll=Deadline(now),
            next_task=Deadline(),
            flow=Deadline(),
            heartbeat=Heartbeat(heartbeat_interval, now),
            fire=Deadline(now),
            prune=Every(PRUNE_INTERVAL, now),
            memory_check=Every(MEMORY_CHECK_INTERVAL, now),
            descendant_scan=Every(MEMORY_CHECK_INTERVAL, now),
            chores_resume=Deadline(0.0),
            lease=Deadline(),
            drain=Deadline(),
        )


def seconds_until(now: float, *moments: float) -> float:
    """How long to wait from ``now`` for the earliest of ``moments`` (0 if one is past)."""
    return max(0.0, min(moments) - now)
