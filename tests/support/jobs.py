"""Job classes used by the integration tests; they log every iteration to a file.

Each iteration pushes a ``start`` event when it has claimed its records (worker lock held)
and an ``end`` event when ``unlock_records`` runs, so tests can rebuild the interval during
which each process was inside each slot and check that no two overlap.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import process_balancer


class RecordingJob(process_balancer.Base):
    """Claims ``records`` records per iteration, each taking ``record_time`` seconds."""

    def _log(self, event: str, **fields: Any) -> None:
        entry = {
            "ev": event,
            "job": self.job_id,
            "slot": self.worker_index,
            "pid": os.getpid(),
            "t": time.time(),
            "fence": self.fencing_token,
            **fields,
        }
        # One short line per O_APPEND write: lines from several processes never interleave.
        line = (json.dumps(entry) + "\n").encode()
        fd = os.open(self.options["log_path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def lock_records(self) -> list[int]:
        self._iteration = uuid.uuid4().hex
        self._done = 0
        self._log("start", it=self._iteration)
        return list(range(int(self.options.get("records", 1))))

    def process_record(self, record: int) -> None:
        time.sleep(float(self.options.get("record_time", 0.05)))
        self._done += 1

    def unlock_records(self) -> None:
        self._log("end", it=self._iteration, done=self._done)
        pause = self.options.get("sleep_after")
        if pause:
            self.status_sleep(float(pause))


class FailingJob(RecordingJob):
    """Raises in every process_record, so its worker keeps failing and restarting."""

    def process_record(self, record: int) -> None:
        raise RuntimeError("boom from FailingJob")

    def after_perform(self) -> None:
        self._log("after")


class AbortingJob(RecordingJob):
    """Calls status_abort() after every iteration."""

    def unlock_records(self) -> None:
        super().unlock_records()
        self.status_abort()


class AdvisoryRecordingJob(RecordingJob):
    """RecordingJob guarded by the ``advisory_lock`` driver (PostgreSQL advisory locks)."""

    lock_driver = "advisory_lock"
