"""Task policies: the retry policy a task carries, its failures by way of dying, how its
last failure was judged, its progress, soft time limit and result retention, whether
someone waits on it; and the error codes of ``pq.RetryLater`` and ``soft_runtime``."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('django_pq', '0003_data_constraints'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='task',
            name='pq_tasks_error_code_valid',
        ),
        migrations.AddField(
            model_name='task',
            name='failure_counts',
            field=models.JSONField(blank=True, help_text='Failed runs so far, by error code.', null=True),
        ),
        migrations.AddField(
            model_name='task',
            name='is_awaited',
            field=models.BooleanField(db_default=False, default=False, help_text='Someone waits on it with task.wait().'),
        ),
        migrations.AddField(
            model_name='task',
            name='keep_result',
            field=models.FloatField(blank=True, help_text='Seconds to keep the finished row, at least (past PQ_RETENTION); 0: no result.', null=True),
        ),
        migrations.AddField(
            model_name='task',
            name='progress',
            field=models.JSONField(blank=True, help_text='What the running task reported with pq.set_progress().', null=True),
        ),
        migrations.AddField(
            model_name='task',
            name='retry_decision',
            field=models.JSONField(blank=True, help_text='How the last failed run was judged: error code, attempt, rule, next run.', null=True),
        ),
        migrations.AddField(
            model_name='task',
            name='retry_policy',
            field=models.JSONField(blank=True, help_text='The pq.Retry policy, as the worker applies it.', null=True),
        ),
        migrations.AddField(
            model_name='task',
            name='soft_runtime',
            field=models.FloatField(blank=True, help_text='Seconds before pq.TimeLimitExceeded is raised.', null=True),
        ),
        migrations.AlterField(
            model_name='task',
            name='error_code',
            field=models.CharField(blank=True, choices=[('exception', 'the task raised an exception'), ('timeout', 'the task ran past its max_runtime'), ('soft_timeout', 'the task did not handle pq.TimeLimitExceeded (soft_runtime)'), ('signal', "the task's process was killed by a signal"), ('memory', 'the task exceeded its memory limit'), ('worker_lost', 'the worker running the task died'), ('shutdown', 'the worker stopped before the task finished'), ('unknown_task', "the task's function is not allowed or does not exist"), ('bad_payload', "the task's arguments could not be decoded"), ('cancelled', 'the task was cancelled'), ('retry_later', 'the task asked to run again later (pq.RetryLater)'), ('retry_refused', 'the task asked to run again past its max_attempts')], default='', max_length=16),
        ),
        migrations.AddConstraint(
            model_name='task',
            constraint=models.CheckConstraint(condition=models.Q(('error_code', ''), ('error_code__in', ['exception', 'timeout', 'soft_timeout', 'signal', 'memory', 'worker_lost', 'shutdown', 'unknown_task', 'bad_payload', 'cancelled', 'retry_later', 'retry_refused']), _connector='OR'), name='pq_tasks_error_code_valid'),
        ),
        migrations.AddConstraint(
            model_name='task',
            constraint=models.CheckConstraint(condition=models.Q(('soft_runtime__isnull', True), models.Q(('soft_runtime__gt', 0), ('soft_runtime__lt', float("inf"))), _connector='OR'), name='pq_tasks_soft_runtime_positive'),
        ),
        migrations.AddConstraint(
            model_name='task',
            constraint=models.CheckConstraint(condition=models.Q(('keep_result__isnull', True), models.Q(('keep_result__gte', 0), ('keep_result__lt', float("inf"))), _connector='OR'), name='pq_tasks_keep_result_valid'),
        ),
    ]
