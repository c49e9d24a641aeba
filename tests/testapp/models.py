"""Models the test tasks write to."""

from django.db import models


class RunLog(models.Model):
    """One line per task start or end, written by the task through its own connection, so
    a run killed midway still leaves its start behind."""

    task_id = models.BigIntegerField(null=True)
    event = models.CharField(max_length=32)
    pid = models.IntegerField()
    value = models.TextField(blank=True, default="")
    at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.event} {self.task_id} {self.pid} {self.value}"
