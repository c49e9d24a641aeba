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


class FaultLedger(models.Model):
    """The fault suite's run ledger: one row per start or end of a run, written by the task
    through its own autocommit connection (see ``tasks.ledger``), so a run killed midway
    still leaves its start. ``run_token`` is the token the row held when the run began."""

    task_id = models.BigIntegerField()
    run_token = models.UUIDField(null=True)
    attempt = models.IntegerField(null=True)
    event = models.CharField(max_length=8)  # "start" | "end"
    pid = models.IntegerField()
    key = models.TextField(blank=True, default="")
    at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["task_id"], name="testapp_faultledger_task")]

    def __str__(self) -> str:
        return f"{self.event} {self.task_id} {self.run_token} {self.pid}"
