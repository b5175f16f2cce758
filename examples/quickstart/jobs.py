"""The quickstart job: send a queue of emails (simulated) with N workers over every process.

Each iteration of worker ``i`` claims up to ``batch_size`` emails from the queue file, "sends"
each one (a pause of ``send_time`` seconds stands in for the mail server), and hands back what
it did not get to. The first process to start on an empty queue fills it with ``seed`` emails.
Every ``report_every`` seconds each process logs one line: how many emails each of its
workers sent and how many are left.

Run from the repository root:

    process-balancer run -c examples/quickstart/process_balancer.yml
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import process_balancer

from .email_queue import Email, EmailQueue

logger = logging.getLogger("quickstart")


class Progress:
    """What the workers of this process sent, summed up in one line now and then."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._sent: dict[int, int] = {}
        self._active: set[int] = set()  # workers running in this process now
        self._next_report = 0.0
        self._reported: tuple[Any, ...] = ()

    def sent(self, worker: int) -> None:
        with self._mutex:
            self._sent[worker] = self._sent.get(worker, 0) + 1

    def active(self, worker: int) -> None:
        with self._mutex:
            self._active.add(worker)

    def gone(self, worker: int) -> None:
        """The worker stopped here (its slot moved, or the process is stopping)."""
        with self._mutex:
            self._active.discard(worker)

    def report(self, queue: EmailQueue, every: float) -> None:
        """Log the progress line if ``every`` seconds have passed and something changed."""
        now = time.monotonic()
        with self._mutex:
            if now < self._next_report:
                return
            self._next_report = now + every
            current = sorted(self._active)
            sent = {w: self._sent.get(w, 0) for w in current}
        left = queue.left()
        state = (tuple(sent.items()), left)
        if state == self._reported:
            return
        self._reported = state
        parts = [f"worker {w}: {n:,} sent" for w, n in sent.items()] or ["no workers here"]
        if left:
            logger.info("%s | queue: %s left", " | ".join(parts), f"{left:,}")
        else:
            total = sum(self._sent.values())
            logger.info(
                "%s | queue: drained (%s sent by this process). Delete %s to start over; "
                "Ctrl-C stops this process",
                " | ".join(parts),
                f"{total:,}",
                queue.path,
            )


PROGRESS = Progress()


class SendEmails(process_balancer.Base):
    """Drains the email queue named by the ``queue_db`` option."""

    _queue: EmailQueue | None = None
    _claimed: bool = False

    @property
    def queue(self) -> EmailQueue:
        if self._queue is None:
            self._queue = EmailQueue(self.options.get("queue_db", "quickstart-queue.sqlite3"))
            seeded = self._queue.seed_if_empty(int(self.options.get("seed", 5000)))
            if seeded:
                logger.info("queued %s emails in %s (first run)", f"{seeded:,}", self._queue.path)
        return self._queue

    def lock_records(self) -> list[Email]:
        assert self.fencing_token is not None
        batch = int(self.options.get("batch_size", 10))
        emails = self.queue.claim(self.worker_index, self.fencing_token, batch)
        self._claimed = bool(emails)
        PROGRESS.active(self.worker_index)
        return emails

    def process_record(self, record: Email) -> None:
        low, high = self.options.get("send_time", [0.02, 0.05])
        time.sleep(random.uniform(float(low), float(high)))  # the mail server at work
        assert self.fencing_token is not None
        if self.queue.mark_sent(record, self.worker_index, self.fencing_token):
            PROGRESS.sent(self.worker_index)
        else:
            logger.warning(
                "email %d was taken over by a newer holder of worker %d",
                record.id,
                self.worker_index,
            )

    def unlock_records(self) -> None:
        if self.fencing_token is not None:
            self.queue.release(self.worker_index, self.fencing_token)
        if self.stopping:
            PROGRESS.gone(self.worker_index)
        elif not self._claimed:
            self.status_sleep(float(self.options.get("idle_sleep", 1.0)))

    def after_perform(self) -> None:
        PROGRESS.report(self.queue, float(self.options.get("report_every", 2.0)))
