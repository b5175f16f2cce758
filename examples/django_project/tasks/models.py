"""The queue table and the record of every processing."""

from __future__ import annotations

from django.db import models


class Task(models.Model):
    """One unit of work. A worker claims it by writing its index and fencing token into
    ``lock_owner`` and ``lock_fence``; the done mark only lands while both are still there."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        DONE = "done"

    payload = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    lock_owner = models.IntegerField(null=True, blank=True)
    lock_fence = models.BigIntegerField(null=True, blank=True)
    locked_at = models.DateTimeField(null=True, blank=True)
    result = models.CharField(max_length=64, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "lock_owner"], name="task_claim_idx")]

    def __str__(self) -> str:
        return f"task {self.pk} ({self.status})"


class TaskRun(models.Model):
    """A processing of a task that landed, written in the same transaction as its done
    mark: exactly one per task when nothing ran twice."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="runs")
    worker_index = models.IntegerField()
    fencing_token = models.BigIntegerField()
    pid = models.IntegerField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"run of task {self.task_id} by worker {self.worker_index}@{self.fencing_token}"
