"""``ProcessTasks``: drain the ``Task`` table with the Django ORM from many processes.

Each worker index claims a batch of queued tasks with ``SELECT ... FOR UPDATE SKIP LOCKED``
and stamps them with its index and its worker lock's fencing token. A task is marked done,
and its ``TaskRun`` written, in one transaction that only lands while the task still carries
both: a holder that was paused (SIGSTOP, a long GC) while its slot moved to a newer holder,
with a higher token, changes nothing when it wakes. ``DjangoJob`` closes stale connections
before and after every iteration, so a database restart between iterations costs a
reconnect, not a failed iteration.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from process_balancer.contrib.django import DjangoJob
from tasks.models import Task, TaskRun

logger = logging.getLogger(__name__)


class ProcessTasks(DjangoJob):
    """Options: ``batch_size`` (tasks claimed per iteration, default 50), ``idle_sleep``
    (seconds to wait after finding nothing, default 1), ``work_time`` (seconds of simulated
    work per task, default 0)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch_size = int(self.options.get("batch_size", 50))
        self.idle_sleep = float(self.options.get("idle_sleep", 1.0))
        self.work_time = float(self.options.get("work_time", 0))
        self._claimed = False

    def lock_records(self) -> list[Task]:
        fence = self.fencing_token
        if fence is None:
            raise RuntimeError(f"{self!r} has no fencing token; the runner sets one")
        now = timezone.now()
        mine = Task.objects.filter(status=Task.Status.QUEUED, lock_owner=self.worker_index)
        with transaction.atomic():
            # Tasks an earlier holder of this index left claimed (it crashed, or lost its lock
            # while paused): holding the index's lock now, this worker is their owner.
            mine.filter(Q(lock_fence__lt=fence) | Q(lock_fence__isnull=True)).update(
                lock_fence=fence, locked_at=now
            )
            free = (
                Task.objects.select_for_update(skip_locked=True)
                .filter(status=Task.Status.QUEUED, lock_owner__isnull=True)
                .order_by("id")
                .values_list("id", flat=True)[: self.batch_size]
            )
            Task.objects.filter(id__in=list(free)).update(
                lock_owner=self.worker_index, lock_fence=fence, locked_at=now
            )
            claimed = list(mine.filter(lock_fence=fence).order_by("id"))
        self._claimed = bool(claimed)
        if not claimed:
            self.status_sleep(self.idle_sleep)
        return claimed

    def process_record(self, task: Task) -> None:
        started = timezone.now()
        if self.work_time:
            time.sleep(self.work_time)
        result = hashlib.sha256(task.payload.encode()).hexdigest()
        with transaction.atomic():
            landed = Task.objects.filter(
                id=task.id,
                status=Task.Status.QUEUED,
                lock_owner=self.worker_index,
                lock_fence=self.fencing_token,
            ).update(status=Task.Status.DONE, lock_owner=None, lock_fence=None, result=result)
            if not landed:
                logger.warning(
                    "job %s worker %d: task %d was taken over by a newer holder of this "
                    "worker index (fencing token %s is stale); leaving it to that holder",
                    self.job_id,
                    self.worker_index,
                    task.id,
                    self.fencing_token,
                )
                return
            TaskRun.objects.create(
                task_id=task.id,
                worker_index=self.worker_index,
                fencing_token=self.fencing_token,
                pid=os.getpid(),
                started_at=started,
                finished_at=timezone.now(),
            )

    def unlock_records(self) -> None:
        # What this iteration claimed and did not get to (a stop or a lost lock cut it).
        if self._claimed:
            Task.objects.filter(
                status=Task.Status.QUEUED,
                lock_owner=self.worker_index,
                lock_fence=self.fencing_token,
            ).update(lock_owner=None, lock_fence=None, locked_at=None)
            self._claimed = False
