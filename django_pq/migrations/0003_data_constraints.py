"""CHECK constraints for every value the worker cannot act on, and the schedule's ``error``."""

import datetime

from django.db import migrations, models

# Rows written before these constraints existed (by raw SQL, another client or an older
# release) may break them. Each is first brought to the nearest value the worker can act
# on, so the migration never fails on an existing install:
#
# - a moment outside the range is clamped to it ('-infinity' becomes the earliest moment,
#   still "due before everything"; 'infinity' the latest, still "not in ten thousand years");
# - a max_runtime of NaN or Infinity becomes NULL (no limit of the task's own; the
#   worker's --max-runtime applies);
# - a schedule's max_attempts of 0 becomes 1, as pq_tasks already required of its runs;
# - a schedule interval longer than the moment range is shortened to it, and the schedule
#   paused with the reason in ``error``;
# - a worker row's concurrency below 1 becomes 1, its min_priority is clamped to 0..100.
EARLIEST, LATEST = "'0001-01-02 00:00:00+00'", "'9999-12-30 00:00:00+00'"
MOMENTS = {
    "pq_tasks": ["run_at", "created_at", "started_at", "finished_at", "slot"],
    "pq_periodic": ["next_run", "last_run", "created_at", "updated_at"],
    "pq_workers": ["started_at", "heartbeat_at", "lease_expires_at", "stopped_at"],
}
CLEAN_ROWS = [
    f"UPDATE {table} SET {column} = LEAST(GREATEST({column}, {EARLIEST}), {LATEST}) "
    f"WHERE {column} < {EARLIEST} OR {column} > {LATEST}"
    for table, columns in MOMENTS.items()
    for column in columns
] + [
    "UPDATE pq_tasks SET max_runtime = NULL WHERE max_runtime >= 'Infinity'",
    "UPDATE pq_periodic SET max_runtime = NULL WHERE max_runtime >= 'Infinity'",
    "UPDATE pq_periodic SET max_attempts = 1 WHERE max_attempts < 1",
    """UPDATE pq_periodic SET active = false, run_every = interval '3652056 days',
        error = 'Paused by migration 0003: run_every ' || run_every::text
            || ' is longer than any schedule can fire; set a shorter interval, then resume.'
    WHERE run_every > interval '3652056 days'""",
    "UPDATE pq_workers SET concurrency = 1 WHERE concurrency < 1",
    "UPDATE pq_workers SET min_priority = LEAST(GREATEST(min_priority, 0), 100) "
    "WHERE min_priority < 0 OR min_priority > 100",
]


class Migration(migrations.Migration):
    dependencies = [
        ("django_pq", "0002_task_permissions_and_failed_index"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="periodic",
            name="pq_periodic_interval_positive",
        ),
        migrations.RemoveConstraint(
            model_name="periodic",
            name="pq_periodic_max_runtime_positive",
        ),
        migrations.RemoveConstraint(
            model_name="task",
            name="pq_tasks_max_runtime_positive",
        ),
        migrations.AddField(
            model_name="periodic",
            name="error",
            field=models.TextField(
                blank=True,
                db_default="",
                default="",
                help_text="Why a worker disabled this schedule; cleared when it is resumed.",
            ),
        ),
        # Nothing to undo: the cleaned values are legal before this migration too.
        migrations.RunSQL(CLEAN_ROWS, reverse_sql=migrations.RunSQL.noop),
        migrations.AddConstraint(
            model_name="periodic",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("run_every__isnull", True),
                    models.Q(
                        ("run_every__gt", datetime.timedelta(0)),
                        ("run_every__lte", datetime.timedelta(days=3652056)),
                    ),
                    _connector="OR",
                ),
                name="pq_periodic_interval_positive",
            ),
        ),
        migrations.AddConstraint(
            model_name="periodic",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("max_runtime__isnull", True),
                    models.Q(("max_runtime__gt", 0), ("max_runtime__lt", float("inf"))),
                    _connector="OR",
                ),
                name="pq_periodic_max_runtime_positive",
            ),
        ),
        migrations.AddConstraint(
            model_name="periodic",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("max_attempts__isnull", True), ("max_attempts__gte", 1), _connector="OR"
                ),
                name="pq_periodic_max_attempts_min",
            ),
        ),
        migrations.AddConstraint(
            model_name="periodic",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "next_run__gte",
                        datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.UTC),
                    ),
                    (
                        "next_run__lte",
                        datetime.datetime(9999, 12, 30, 0, 0, tzinfo=datetime.UTC),
                    ),
                ),
                name="pq_periodic_next_run_finite",
            ),
        ),
        migrations.AddConstraint(
            model_name="periodic",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("last_run__isnull", True),
                    models.Q(
                        (
                            "last_run__gte",
                            datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.UTC),
                        ),
                        (
                            "last_run__lte",
                            datetime.datetime(9999, 12, 30, 0, 0, tzinfo=datetime.UTC),
                        ),
                    ),
                    _connector="OR",
                ),
                name="pq_periodic_last_run_finite",
            ),
        ),
        migrations.AddConstraint(
            model_name="periodic",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "created_at__gte",
                        datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.UTC),
                    ),
                    (
                        "created_at__lte",
                        datetime.datetime(9999, 12, 30, 0, 0, tzinfo=datetime.UTC),
                    ),
                ),
                name="pq_periodic_created_at_finite",
            ),
        ),
        migrations.AddConstraint(
            model_name="periodic",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "updated_at__gte",
                        datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.UTC),
                    ),
                    (
                        "updated_at__lte",
                        datetime.datetime(9999, 12, 30, 0, 0, tzinfo=datetime.UTC),
                    ),
                ),
                name="pq_periodic_updated_at_finite",
            ),
        ),
        migrations.AddConstraint(
            model_name="task",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("max_runtime__isnull", True),
                    models.Q(("max_runtime__gt", 0), ("max_runtime__lt", float("inf"))),
                    _connector="OR",
                ),
                name="pq_tasks_max_runtime_positive",
            ),
        ),
        migrations.AddConstraint(
            model_name="task",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("run_at__gte", datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.UTC)),
                    (
                        "run_at__lte",
                        datetime.datetime(9999, 12, 30, 0, 0, tzinfo=datetime.UTC),
                    ),
                ),
                name="pq_tasks_run_at_finite",
            ),
        ),
        migrations.AddConstraint(
            model_name="task",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "created_at__gte",
                        datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.UTC),
                    ),
                    (
                        "created_at__lte",
                        datetime.datetime(9999, 12, 30, 0, 0, tzinfo=datetime.UTC),
                    ),
                ),
                name="pq_tasks_created_at_finite",
            ),
        ),
        migrations.AddConstraint(
            model_name="task",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("started_at__isnull", True),
                    models.Q(
                        (
                            "started_at__gte",
                            datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.UTC),
                        ),
                        (
                            "started_at__lte",
                            datetime.datetime(9999, 12, 30, 0, 0, tzinfo=datetime.UTC),
                        ),
                    ),
                    _connector="OR",
                ),
                name="pq_tasks_started_at_finite",
            ),
        ),
        migrations.AddConstraint(
            model_name="task",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("finished_at__isnull", True),
                    models.Q(
                        (
                            "finished_at__gte",
                            datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.UTC),
                        ),
                        (
                            "finished_at__lte",
                            datetime.datetime(9999, 12, 30, 0, 0, tzinfo=datetime.UTC),
                        ),
                    ),
                    _connector="OR",
                ),
                name="pq_tasks_finished_at_finite",
            ),
        ),
        migrations.AddConstraint(
            model_name="task",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("slot__isnull", True),
                    models.Q(
                        (
                            "slot__gte",
                            datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.UTC),
                        ),
                        (
                            "slot__lte",
                            datetime.datetime(9999, 12, 30, 0, 0, tzinfo=datetime.UTC),
                        ),
                    ),
                    _connector="OR",
                ),
                name="pq_tasks_slot_finite",
            ),
        ),
        migrations.AddConstraint(
            model_name="worker",
            constraint=models.CheckConstraint(
                condition=models.Q(("concurrency__gte", 1)), name="pq_workers_concurrency_min"
            ),
        ),
        migrations.AddConstraint(
            model_name="worker",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("min_priority__isnull", True),
                    models.Q(("min_priority__gte", 0), ("min_priority__lte", 100)),
                    _connector="OR",
                ),
                name="pq_workers_min_priority_range",
            ),
        ),
        migrations.AddConstraint(
            model_name="worker",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "started_at__gte",
                        datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.UTC),
                    ),
                    (
                        "started_at__lte",
                        datetime.datetime(9999, 12, 30, 0, 0, tzinfo=datetime.UTC),
                    ),
                ),
                name="pq_workers_started_at_finite",
            ),
        ),
        migrations.AddConstraint(
            model_name="worker",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "heartbeat_at__gte",
                        datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.UTC),
                    ),
                    (
                        "heartbeat_at__lte",
                        datetime.datetime(9999, 12, 30, 0, 0, tzinfo=datetime.UTC),
                    ),
                ),
                name="pq_workers_heartbeat_at_finite",
            ),
        ),
        migrations.AddConstraint(
            model_name="worker",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "lease_expires_at__gte",
                        datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.UTC),
                    ),
                    (
                        "lease_expires_at__lte",
                        datetime.datetime(9999, 12, 30, 0, 0, tzinfo=datetime.UTC),
                    ),
                ),
                name="pq_workers_lease_expires_at_finite",
            ),
        ),
        migrations.AddConstraint(
            model_name="worker",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("stopped_at__isnull", True),
                    models.Q(
                        (
                            "stopped_at__gte",
                            datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.UTC),
                        ),
                        (
                            "stopped_at__lte",
                            datetime.datetime(9999, 12, 30, 0, 0, tzinfo=datetime.UTC),
                        ),
                    ),
                    _connector="OR",
                ),
                name="pq_workers_stopped_at_finite",
            ),
        ),
    ]
