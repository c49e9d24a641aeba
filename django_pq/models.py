"""The three tables: ``pq_tasks`` (Task), ``pq_periodic`` (Periodic), ``pq_workers`` (Worker).

The database states the rules (check and unique constraints, a partial claim index), so a
row written by raw SQL, another language or a buggy release is held to them too.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from django.db import models, transaction
from django.db.models import Q, Value
from django.db.models.functions import Now, Replace
from django.utils.translation import gettext_lazy as _

from django_pq.codec import decode_payload, decode_value
from django_pq.conf import LONGEST_LEASE, pq_settings
from django_pq.exceptions import InvalidSchedule
from django_pq.flow_limits import KEY_LENGTH, ON_FAILURE
from django_pq.store import schedules as store
from django_pq.task_paths import task_path
from django_pq.timing import EARLIEST_MOMENT, LATEST_MOMENT, LONGEST_INTERVAL, next_slot
from django_pq.timing import describe as describe_timing


class Priority(enum.IntEnum):
    """pq's five named priority levels. Any integer from 0 to 100 is legal."""

    BATCH = 0
    LOW = 25
    NORMAL = 50
    HIGH = 75
    CRITICAL = 100

    @classmethod
    def label_for(cls, value: int) -> str:
        """``"HIGH"`` for 75, ``"NORMAL+10"`` for 60: the nearest level at or below."""
        below = max((level for level in cls if level <= value), default=cls.BATCH)
        return below.name if below == value else f"{below.name}+{value - below}"


class Status(models.TextChoices):
    """Where a task is in its life.

    It moves only along ``pending → running → completed | failed | cancelled``,
    ``running → pending`` (a retry with backoff, or a version parked by ``upsert``) and
    ``failed | cancelled → pending`` (``retry()``); ``pending → cancelled`` by ``cancel()``.
    A task that waits for others (``after=``, chains, batch callbacks) starts ``blocked``
    and moves ``blocked → pending`` when the last of them ends, or ``blocked → cancelled``
    (``dependency_failed``, or its condition not met); ``retry()`` of the dependency that
    cancelled it moves it back to ``blocked``.
    """

    PENDING = "pending", _("pending")
    RUNNING = "running", _("running")
    COMPLETED = "completed", _("completed")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")
    BLOCKED = "blocked", _("blocked")


FINISHED_STATUSES = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

#: The columns that make up one version of a task: what ``upsert`` replaces, and what it
#: parks in ``requeue`` while an older version runs.
VERSION_FIELDS = (
    "name",
    "payload",
    "queue",
    "priority",
    "run_at",
    "max_attempts",
    "max_runtime",
    "soft_runtime",
    "retry_policy",
    "keep_result",
    "limit_key",
    "fair_key",
)


class ErrorCode(models.TextChoices):
    """Why a run ended badly: a fixed vocabulary for dashboards and alerts."""

    EXCEPTION = "exception", _("the task raised an exception")
    TIMEOUT = "timeout", _("the task ran past its max_runtime")
    SOFT_TIMEOUT = "soft_timeout", _("the task did not handle pq.TimeLimitExceeded (soft_runtime)")
    SIGNAL = "signal", _("the task's process was killed by a signal")
    MEMORY = "memory", _("the task exceeded its memory limit")
    WORKER_LOST = "worker_lost", _("the worker running the task died")
    SHUTDOWN = "shutdown", _("the worker stopped before the task finished")
    UNKNOWN_TASK = "unknown_task", _("the task's function is not allowed or does not exist")
    BAD_PAYLOAD = "bad_payload", _("the task's arguments could not be decoded")
    CANCELLED = "cancelled", _("the task was cancelled")
    RETRY_LATER = "retry_later", _("the task asked to run again later (pq.RetryLater)")
    RETRY_REFUSED = "retry_refused", _("the task asked to run again past its max_attempts")
    DEPENDENCY_FAILED = "dependency_failed", _("a task it waited for failed or was cancelled")


class RunIf(models.TextChoices):
    """When a task that waits for others runs, once they have all ended (``run_if``;
    NULL: only if they all completed, and it is cancelled as soon as one fails)."""

    ENDED = "ended", _("whatever they ended as (run_anyway, on_finish)")
    FAILED = "failed", _("only if one failed or was cancelled (on_failure)")


def _moment_check(field: str, name: str, *, nullable: bool = False) -> models.CheckConstraint:
    """A timestamp between EARLIEST_MOMENT and LATEST_MOMENT: never ``±infinity``, which
    the worker cannot subtract from now() nor load into a datetime."""
    within = Q(**{f"{field}__gte": EARLIEST_MOMENT, f"{field}__lte": LATEST_MOMENT})
    condition = Q(**{f"{field}__isnull": True}) | within if nullable else within
    return models.CheckConstraint(condition=condition, name=name)


def _runtime_check(name: str, field: str = "max_runtime") -> models.CheckConstraint:
    """No limit (NULL), or a positive, finite number of seconds. ``'NaN' > 0`` holds in
    Postgres and ``'Infinity'`` is no deadline, so both are kept out by ``< 'Infinity'``."""
    return models.CheckConstraint(
        condition=Q(**{f"{field}__isnull": True})
        | Q(**{f"{field}__gt": 0, f"{field}__lt": float("inf")}),
        name=name,
    )


def _choices_check(
    field: str, choices: type[models.TextChoices], name: str
) -> models.CheckConstraint:
    return models.CheckConstraint(condition=Q(**{f"{field}__in": choices.values}), name=name)


def _priority_check(name: str) -> models.CheckConstraint:
    return models.CheckConstraint(condition=Q(priority__gte=0) & Q(priority__lte=100), name=name)


class TaskQuerySet(models.QuerySet["Task"]):
    """Lookups named after the states a task can be in."""

    def pending(self) -> TaskQuerySet:
        return self.filter(status=Status.PENDING)

    def ready(self) -> TaskQuerySet:
        """Pending tasks whose ``run_at`` has come (by the database clock)."""
        return self.filter(status=Status.PENDING, run_at__lte=Now())

    def scheduled(self) -> TaskQuerySet:
        """Pending tasks waiting for a future ``run_at``."""
        return self.filter(status=Status.PENDING, run_at__gt=Now())

    def running(self) -> TaskQuerySet:
        return self.filter(status=Status.RUNNING)

    def completed(self) -> TaskQuerySet:
        return self.filter(status=Status.COMPLETED)

    def failed(self) -> TaskQuerySet:
        return self.filter(status=Status.FAILED)

    def cancelled(self) -> TaskQuerySet:
        return self.filter(status=Status.CANCELLED)

    def blocked(self) -> TaskQuerySet:
        """Tasks waiting for other tasks to end (``after=``, chains, batch callbacks)."""
        return self.filter(status=Status.BLOCKED)

    def finished(self) -> TaskQuerySet:
        return self.filter(status__in=FINISHED_STATUSES)

    def unfinished(self) -> TaskQuerySet:
        return self.filter(status__in=(Status.PENDING, Status.RUNNING, Status.BLOCKED))

    def for_function(self, func_or_name: Any) -> TaskQuerySet:
        """Tasks of one function, given the function itself or its ``module:name`` path."""
        name = func_or_name if isinstance(func_or_name, str) else task_path(func_or_name)
        return self.filter(name=name)

    def by_client_id(self, client_id: str) -> Task:
        """The task with this ``client_id``; raises ``Task.DoesNotExist`` when there is none."""
        return self.get(client_id=client_id)


class Task(models.Model):
    """One run of a function: ``pq_tasks``."""

    id = models.BigAutoField(primary_key=True)
    queue = models.CharField(max_length=100, default="default")
    name = models.CharField(max_length=255, help_text="module.path:function")
    payload = models.JSONField(default=dict, help_text="Encoded args and kwargs.")
    priority = models.SmallIntegerField(default=Priority.NORMAL)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    run_at = models.DateTimeField(db_default=Now())
    created_at = models.DateTimeField(db_default=Now())
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=1)
    max_runtime = models.FloatField(null=True, blank=True, help_text="Seconds.")
    soft_runtime = models.FloatField(
        null=True, blank=True, help_text="Seconds before pq.TimeLimitExceeded is raised."
    )
    client_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    requeue = models.JSONField(
        null=True, blank=True, help_text="A newer version parked by upsert() while this one runs."
    )
    is_cancel_requested = models.BooleanField(default=False)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    error_code = models.CharField(max_length=32, choices=ErrorCode.choices, blank=True, default="")
    periodic = models.ForeignKey(
        "Periodic", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    slot = models.DateTimeField(null=True, blank=True, help_text="The schedule slot it ran for.")
    # No foreign key: worker rows are pruned while task history keeps who ran it.
    worker_id = models.UUIDField(null=True, blank=True)
    run_token = models.UUIDField(null=True, blank=True)
    peak_rss = models.BigIntegerField(null=True, blank=True, help_text="Bytes.")
    cpu_seconds = models.FloatField(null=True, blank=True)
    retry_policy = models.JSONField(
        null=True, blank=True, help_text="The pq.Retry policy, as the worker applies it."
    )
    failure_counts = models.JSONField(
        null=True, blank=True, help_text="Failed runs so far, by error code."
    )
    retry_decision = models.JSONField(
        null=True,
        blank=True,
        help_text="How the last failed run was judged: error code, attempt, rule, next run.",
    )
    progress = models.JSONField(
        null=True, blank=True, help_text="What the running task reported with pq.set_progress()."
    )
    keep_result = models.FloatField(
        null=True,
        blank=True,
        help_text="Seconds to keep the finished row, at least (past PQ_RETENTION); 0: no result.",
    )
    is_awaited = models.BooleanField(
        default=False, db_default=False, help_text="Someone waits on it with task.wait()."
    )
    # NULL, not "": a key is either given or not, and the partial indexes skip NULLs.
    limit_key = models.CharField(  # noqa: DJ001
        max_length=KEY_LENGTH,
        null=True,
        blank=True,
        help_text="The flow key PQ_LIMITS and the admin's limits apply to (e.g. 'stripe').",
    )
    fair_key = models.CharField(  # noqa: DJ001
        max_length=KEY_LENGTH,
        null=True,
        blank=True,
        help_text="Tasks of different fair keys (e.g. tenants) are claimed round-robin.",
    )
    # Set by the enqueue statement for a row with a fair_key: its turn among the pending
    # rows of its priority; 0 for every other row (see store.tasks).
    fair_rank = models.BigIntegerField(default=0, db_default=0)
    # Dependencies (pq_dependencies): whether any task waits for this one, so only such
    # rows' ends do the work of deciding what they release (the trigger's WHEN).
    has_dependents = models.BooleanField(default=False, db_default=False)
    run_if = models.CharField(  # noqa: DJ001
        max_length=8,
        choices=RunIf.choices,
        null=True,
        blank=True,
        help_text="When a waiting task runs once its dependencies ended; empty: all completed.",
    )
    takes_result = models.BooleanField(
        default=False,
        db_default=False,
        help_text="A chain step: the previous step's result becomes its first argument.",
    )
    batch = models.ForeignKey(
        "Batch",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tasks",
        db_index=False,  # a partial index below: most tasks belong to no batch
    )

    objects = TaskQuerySet.as_manager()

    class Meta:
        db_table = "pq_tasks"
        ordering = ["-id"]
        permissions = [
            ("retry_task", "Can retry failed or cancelled tasks"),
            ("cancel_task", "Can cancel pending or running tasks"),
            ("run_task_now", "Can run scheduled tasks now"),
        ]
        constraints = [
            _priority_check("pq_tasks_priority_range"),
            _choices_check("status", Status, "pq_tasks_status_valid"),
            models.CheckConstraint(
                condition=Q(run_if__isnull=True) | Q(run_if__in=RunIf.values),
                name="pq_tasks_run_if_valid",
            ),
            models.CheckConstraint(
                condition=Q(error_code="") | Q(error_code__in=ErrorCode.values),
                name="pq_tasks_error_code_valid",
            ),
            models.CheckConstraint(
                condition=Q(max_attempts__gte=1), name="pq_tasks_max_attempts_min"
            ),
            _runtime_check("pq_tasks_max_runtime_positive"),
            _runtime_check("pq_tasks_soft_runtime_positive", "soft_runtime"),
            models.CheckConstraint(
                condition=Q(keep_result__isnull=True)
                | Q(keep_result__gte=0, keep_result__lt=float("inf")),
                name="pq_tasks_keep_result_valid",
            ),
            models.CheckConstraint(
                condition=~Q(status=Status.RUNNING) | Q(run_token__isnull=False),
                name="pq_tasks_running_has_token",
            ),
            _moment_check("run_at", "pq_tasks_run_at_finite"),
            _moment_check("created_at", "pq_tasks_created_at_finite"),
            _moment_check("started_at", "pq_tasks_started_at_finite", nullable=True),
            _moment_check("finished_at", "pq_tasks_finished_at_finite", nullable=True),
            _moment_check("slot", "pq_tasks_slot_finite", nullable=True),
            models.UniqueConstraint(fields=["periodic", "slot"], name="pq_tasks_one_run_per_slot"),
        ]
        indexes = [
            # The claim reads only pending rows in claim order; everything else stays out
            # of this small, hot index.
            models.Index(
                models.F("priority").desc(),
                "fair_rank",
                "run_at",
                "id",
                name="pq_tasks_claim_fair",
                condition=Q(status="pending"),
            ),
            # Flow control: a key's running tasks, its ordered head, its held failures;
            # a fair key's last turn and the current turn. Rows without keys stay out.
            models.Index(
                fields=["limit_key"],
                name="pq_tasks_limit_running",
                condition=Q(status="running", limit_key__isnull=False),
            ),
            models.Index(
                fields=["limit_key", "id"],
                name="pq_tasks_limit_pending",
                condition=Q(status="pending", limit_key__isnull=False),
            ),
            models.Index(
                fields=["limit_key", "finished_at"],
                name="pq_tasks_limit_failed",
                condition=Q(status="failed", limit_key__isnull=False),
            ),
            models.Index(
                fields=["fair_key", "priority", "fair_rank"],
                name="pq_tasks_fair_last",
                condition=Q(status="pending", fair_key__isnull=False),
            ),
            models.Index(
                fields=["priority", "fair_rank"],
                name="pq_tasks_fair_turn",
                condition=Q(status="pending", fair_key__isnull=False),
            ),
            models.Index(
                fields=["worker_id"], name="pq_tasks_running", condition=Q(status="running")
            ),
            models.Index(
                fields=["finished_at"],
                name="pq_tasks_finished",
                condition=Q(status__in=["completed", "failed", "cancelled"]),
            ),
            models.Index(fields=["name", "-id"], name="pq_tasks_name"),
            models.Index(
                fields=["batch", "status"],
                name="pq_tasks_batch",
                condition=Q(batch__isnull=False),
            ),
            models.Index(fields=["id"], name="pq_tasks_blocked", condition=Q(status="blocked")),
            # The admin's failed/cancelled views, newest first, without reading all history.
            models.Index(
                fields=["-id"],
                name="pq_tasks_failed",
                condition=Q(status__in=["failed", "cancelled"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} #{self.pk} ({self.status})"

    @property
    def priority_label(self) -> str:
        return Priority.label_for(self.priority)

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    def decoded_arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The task's ``(args, kwargs)``, decoded. Pickled values need ``PQ_PICKLE``."""
        return decode_payload(self.payload)

    def decoded_result(self) -> Any:
        return None if self.result is None else decode_value(self.result)

    def wait(self, timeout: float | dt.timedelta = 30.0) -> Task:
        """Wait until this task has ended; return it refreshed. Raises ``TimeoutError``
        after ``timeout`` seconds. Woken by a notification when the task ends (for scripts
        and tests; in a web request, enqueue and return instead)."""
        from django_pq.waiting import wait_for

        return wait_for(self, timeout)


class PeriodicQuerySet(models.QuerySet["Periodic"]):
    def active(self) -> PeriodicQuerySet:
        return self.filter(active=True)


class Periodic(models.Model):
    """A schedule that fires task rows: ``pq_periodic``."""

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=255, help_text="module.path:function")
    key = models.CharField(
        max_length=255,
        blank=True,
        default="",
        help_text="Tells several schedules of one function apart.",
    )
    payload = models.JSONField(default=dict)
    priority = models.SmallIntegerField(default=Priority.NORMAL)
    queue = models.CharField(max_length=100, default="default")
    run_every = models.DurationField(null=True, blank=True)
    # NULL, not "", marks "no cron": the check constraint needs exactly one of the two set.
    cron = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    timezone = models.CharField(max_length=64, default="UTC")
    next_run = models.DateTimeField(db_default=Now())
    last_run = models.DateTimeField(null=True, blank=True)
    max_concurrent = models.PositiveIntegerField(
        null=True, blank=True, default=1, help_text="Runs allowed at once; empty means unlimited."
    )
    active = models.BooleanField(default=True)
    max_runtime = models.FloatField(null=True, blank=True, help_text="Seconds.")
    max_attempts = models.PositiveIntegerField(null=True, blank=True)
    client_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    skipped_runs = models.PositiveIntegerField(default=0, help_text="Ticks skipped for overlap.")
    is_declared = models.BooleanField(default=False, help_text="Created from code, not the admin.")
    error = models.TextField(
        blank=True,
        default="",
        db_default="",
        help_text="Why a worker disabled this schedule; cleared when it is resumed.",
    )
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    objects = PeriodicQuerySet.as_manager()

    class Meta:
        db_table = "pq_periodic"
        ordering = ["name", "key"]
        verbose_name = "periodic schedule"
        permissions = [
            ("pause_periodic", "Can pause and resume periodic schedules"),
            ("run_periodic_now", "Can run periodic schedules now"),
        ]
        constraints = [
            _priority_check("pq_periodic_priority_range"),
            models.CheckConstraint(
                condition=(
                    Q(run_every__isnull=False, cron__isnull=True)
                    | Q(run_every__isnull=True, cron__isnull=False)
                ),
                name="pq_periodic_one_of_interval_or_cron",
            ),
            models.CheckConstraint(
                condition=Q(run_every__isnull=True)
                | Q(run_every__gt=dt.timedelta(0), run_every__lte=LONGEST_INTERVAL),
                name="pq_periodic_interval_positive",
            ),
            models.CheckConstraint(
                condition=Q(max_concurrent__isnull=True) | Q(max_concurrent__gte=1),
                name="pq_periodic_max_concurrent_min",
            ),
            _runtime_check("pq_periodic_max_runtime_positive"),
            # Copied to each run, where pq_tasks requires at least one attempt.
            models.CheckConstraint(
                condition=Q(max_attempts__isnull=True) | Q(max_attempts__gte=1),
                name="pq_periodic_max_attempts_min",
            ),
            _moment_check("next_run", "pq_periodic_next_run_finite"),
            _moment_check("last_run", "pq_periodic_last_run_finite", nullable=True),
            _moment_check("created_at", "pq_periodic_created_at_finite"),
            _moment_check("updated_at", "pq_periodic_updated_at_finite"),
            models.UniqueConstraint(fields=["name", "key"], name="pq_periodic_name_key"),
        ]
        indexes = [
            models.Index(fields=["next_run"], name="pq_periodic_due", condition=Q(active=True)),
        ]

    def __str__(self) -> str:
        return f"{self.name}[{self.key}]" if self.key else self.name

    @property
    def description(self) -> str:
        """A person's reading of the timing: "every 5 minutes", "at 09:00 on Monday (UTC)"."""
        return describe_timing(self.run_every, self.cron, self.timezone)

    def first_slot_after(self, now: dt.datetime) -> dt.datetime:
        """The first slot after ``now``: for a new, retimed or resumed schedule."""
        return next_slot(
            run_every=self.run_every, cron=self.cron, timezone=self.timezone, after=now
        )

    def pause(self) -> None:
        """Stop firing; the row, its history and its runs stay."""
        self._set_active(False)

    def resume(self) -> None:
        """Fire again from the next slot after now; missed slots are not made up.

        Clears the error a worker stored when it disabled the schedule, and refuses
        (:class:`InvalidSchedule`) a timing that still has no next slot.
        """
        self._set_active(True)

    def _set_active(self, active: bool) -> None:
        using = pq_settings.DATABASE
        with transaction.atomic(using=using):
            now = store.database_now(using)
            fields = ["active", "updated_at"]
            if active:
                try:
                    next_run = self.first_slot_after(now)
                except InvalidSchedule as error:
                    raise InvalidSchedule(
                        f"Schedule {self} cannot be resumed: {error} Fix its timing "
                        "(pq.schedule() or its admin page), then resume it."
                    ) from None
                self.next_run, self.error = next_run, ""
                fields += ["next_run", "error"]
            self.active = active
            self.updated_at = now
            self.save(using=using, update_fields=fields)
            store.notify_schedules_changed(using)

    def run_now(self) -> Task | None:
        """Fire one run now, leaving ``next_run``; None if ``max_concurrent`` runs are live."""
        task_id = store.run_now(self.pk)
        if task_id is None:
            self.refresh_from_db(using=pq_settings.DATABASE)
            return None
        return Task.objects.using(pq_settings.DATABASE).get(pk=task_id)


def holds_a_lease() -> Q:
    """A worker row whose lease holds by the database clock: not stopped, not lapsed, and
    not further ahead than any worker may lease (``LONGEST_LEASE``): the reaper's rule."""
    return Q(
        stopped_at__isnull=True,
        lease_expires_at__gt=Now(),
        lease_expires_at__lte=Now() + dt.timedelta(seconds=LONGEST_LEASE),
    )


class WorkerQuerySet(models.QuerySet["Worker"]):
    def alive(self) -> WorkerQuerySet:
        """Workers whose lease holds (by the database clock; see :func:`holds_a_lease`)."""
        return self.filter(holds_a_lease())


class Worker(models.Model):
    """A running (or recently stopped) ``pq_worker`` process: ``pq_workers``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    hostname = models.CharField(max_length=255)
    pid = models.IntegerField()
    queues = models.JSONField(default=list, help_text="Empty means every queue.")
    priorities = models.JSONField(default=list, help_text="Empty means every priority.")
    min_priority = models.SmallIntegerField(null=True, blank=True)
    concurrency = models.PositiveIntegerField()
    started_at = models.DateTimeField(db_default=Now())
    heartbeat_at = models.DateTimeField(db_default=Now())
    lease_expires_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)
    version = models.CharField(max_length=32, blank=True, default="")

    objects = WorkerQuerySet.as_manager()

    class Meta:
        db_table = "pq_workers"
        ordering = ["-started_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(concurrency__gte=1), name="pq_workers_concurrency_min"
            ),
            models.CheckConstraint(
                condition=Q(min_priority__isnull=True)
                | Q(min_priority__gte=0, min_priority__lte=100),
                name="pq_workers_min_priority_range",
            ),
            _moment_check("started_at", "pq_workers_started_at_finite"),
            _moment_check("heartbeat_at", "pq_workers_heartbeat_at_finite"),
            _moment_check("lease_expires_at", "pq_workers_lease_expires_at_finite"),
            _moment_check("stopped_at", "pq_workers_stopped_at_finite", nullable=True),
        ]
        indexes = [models.Index(fields=["lease_expires_at"], name="pq_workers_lease")]

    def __str__(self) -> str:
        return f"{self.hostname}:{self.pid}"


class Limit(models.Model):
    """A flow limit on a key or glob pattern: ``pq_limits``. Written from ``PQ_LIMITS`` by
    workers on start (and ``pq_limits --sync``), or by staff in the admin; the claim reads
    it every time, so a change applies without a restart."""

    pattern = models.CharField(
        max_length=KEY_LENGTH,
        primary_key=True,
        help_text="A limit_key, or a glob like 'customer:*'.",
    )
    # Derived by the database, so no writer can hand the claim a LIKE pattern that fails
    # (one ending in a lone escape character fails every statement that uses it).
    like_pattern = models.GeneratedField(
        expression=Replace(
            Replace(
                Replace(Replace("pattern", Value("\\"), Value("\\\\")), Value("%"), Value("\\%")),
                Value("_"),
                Value("\\_"),
            ),
            Value("*"),
            Value("%"),
        ),
        output_field=models.CharField(max_length=4 * KEY_LENGTH),
        db_persist=True,
    )
    concurrency = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tasks of one key running at once, at most."
    )
    rate = models.CharField(  # noqa: DJ001
        max_length=32, null=True, blank=True, help_text="Starts per period: '20/s', '100/m'."
    )
    per_second = models.FloatField(null=True, blank=True, editable=False)
    burst = models.FloatField(default=1.0, help_text="Starts the rate may save up.")
    ordered = models.BooleanField(
        default=False, help_text="One at a time, in enqueue order (a sequence)."
    )
    on_failure = models.CharField(
        max_length=8,
        default="hold",
        choices=[(value, value) for value in ON_FAILURE],
        help_text="Ordered keys: whether a task that failed for good holds the rest.",
    )
    source = models.CharField(max_length=8, default="admin", editable=False)
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "pq_limits"
        ordering = ["pattern"]
        constraints = [
            models.CheckConstraint(
                condition=Q(concurrency__isnull=True) | Q(concurrency__gte=1),
                name="pq_limits_concurrency_min",
            ),
            # Bounded, so the claim's arithmetic (seconds to the next token) stays in range.
            models.CheckConstraint(
                condition=Q(per_second__isnull=True) | Q(per_second__gte=1e-6, per_second__lte=1e9),
                name="pq_limits_rate_range",
            ),
            models.CheckConstraint(
                condition=Q(burst__gt=0, burst__lte=1e9), name="pq_limits_burst_range"
            ),
            models.CheckConstraint(
                condition=Q(ordered=False) | Q(concurrency=1), name="pq_limits_ordered_one"
            ),
            models.CheckConstraint(
                condition=Q(on_failure__in=ON_FAILURE), name="pq_limits_on_failure_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.pattern


class FlowKey(models.Model):
    """The claim's state for one ``limit_key``: ``pq_flow_keys``. Created by the first
    claim that meets the key under a limit; bumped by every claim that starts its tasks."""

    key = models.CharField(max_length=KEY_LENGTH, primary_key=True)
    # Bumped by each claim that decides about this key: a claim whose snapshot is older
    # than the row it locked sees a different version, and leaves the key for next round.
    version = models.BigIntegerField(default=0, db_default=0)
    tokens = models.FloatField(null=True, blank=True, help_text="Rate tokens left (None: full).")
    tokens_at = models.DateTimeField(null=True, blank=True)
    blocked_until = models.DateTimeField(
        null=True, blank=True, help_text="The claim does not look at the key before then."
    )
    is_paused = models.BooleanField(default=False, db_default=False)
    is_held = models.BooleanField(
        default=False,
        db_default=False,
        help_text="An ordered key stopped by a task that failed for good (retry or resume it).",
    )
    paused_at = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(
        null=True, blank=True, help_text="Failures before this no longer hold an ordered key."
    )

    class Meta:
        db_table = "pq_flow_keys"
        ordering = ["key"]
        verbose_name = "flow key"
        permissions = [("pause_flowkey", "Can pause and resume flow keys")]
        constraints = [
            # What a hostile writer could put here must not fail the claim for every key.
            models.CheckConstraint(
                condition=Q(version__gte=0, version__lt=2**62), name="pq_flow_keys_version_range"
            ),
            models.CheckConstraint(
                condition=Q(tokens__isnull=True) | Q(tokens__gte=-1e9, tokens__lte=1e9),
                name="pq_flow_keys_tokens_range",
            ),
            _moment_check("tokens_at", "pq_flow_keys_tokens_at_finite", nullable=True),
            _moment_check("blocked_until", "pq_flow_keys_blocked_until_finite", nullable=True),
            _moment_check("paused_at", "pq_flow_keys_paused_at_finite", nullable=True),
            _moment_check("released_at", "pq_flow_keys_released_at_finite", nullable=True),
        ]
        indexes = [
            models.Index(fields=["blocked_until"], name="pq_flow_keys_blocked"),
            models.Index(fields=["key"], name="pq_flow_keys_paused", condition=Q(is_paused=True)),
        ]

    def __str__(self) -> str:
        return self.key


def _callback() -> models.ForeignKey[Task | None]:
    """A batch's callback task. ON DELETE SET NULL in the database (0006), for pruning's
    SQL and the ORM alike: the ORM's deletes of tasks stay single statements."""
    return models.ForeignKey(
        Task,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
    )


class BatchKind(models.TextChoices):
    BATCH = "batch", _("batch")
    CHAIN = "chain", _("chain")


class Batch(models.Model):
    """A batch or a chain (``pq_batches``): its members are the tasks whose ``batch`` it
    is; callbacks are tasks that wait for every member, run by condition."""

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=8, choices=BatchKind.choices, default=BatchKind.BATCH)
    created_at = models.DateTimeField(db_default=Now())
    on_success = _callback()
    on_failure = _callback()
    on_finish = _callback()

    class Meta:
        db_table = "pq_batches"
        ordering = ["-id"]
        verbose_name_plural = "batches"
        constraints = [_choices_check("kind", BatchKind, "pq_batches_kind_valid")]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"

    @property
    def callback_ids(self) -> list[int]:
        ids = (self.on_success_id, self.on_failure_id, self.on_finish_id)
        return [task_id for task_id in ids if task_id is not None]


class Dependency(models.Model):
    """One task waiting for another (``pq_dependencies``): ``task`` runs after
    ``depends_on`` ends. ``satisfied`` once it has; rows stay, for the admin's links and
    for ``retry()`` to revive what a failure cancelled."""

    id = models.BigAutoField(primary_key=True)
    # ON DELETE CASCADE in the database (0006), for pruning's SQL and the ORM alike: the
    # ORM's deletes of tasks stay single statements (no rows loaded to cascade).
    task = models.ForeignKey(
        Task, on_delete=models.DO_NOTHING, related_name="dependencies", db_constraint=False
    )
    depends_on = models.ForeignKey(
        Task,
        on_delete=models.DO_NOTHING,
        related_name="dependents",
        db_index=False,
        db_constraint=False,
    )
    satisfied = models.BooleanField(default=False, db_default=False)
    # Both ends written by the same call (a chain, a batch): no one else could end the
    # dependency before that transaction commits, so its commit need not check.
    is_fresh = models.BooleanField(default=False, db_default=False)

    class Meta:
        db_table = "pq_dependencies"
        constraints = [
            models.UniqueConstraint(fields=["task", "depends_on"], name="pq_dependencies_once"),
            models.CheckConstraint(
                condition=~Q(task=models.F("depends_on")), name="pq_dependencies_not_itself"
            ),
        ]
        indexes = [
            models.Index(fields=["depends_on"], name="pq_dependencies_dependents"),
            # What a task still waits for, newest first: a finish looks for one.
            models.Index(
                "task",
                models.F("depends_on").desc(),
                name="pq_dependencies_waiting",
                condition=Q(satisfied=False),
            ),
        ]

    def __str__(self) -> str:
        return f"task #{self.task_id} after #{self.depends_on_id}"
