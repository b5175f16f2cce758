"""The job ``bench/rebalance.py`` runs in real ``process-balancer run`` processes.

Every iteration appends two events to a Redis list: ``start`` once its records are claimed
(the worker lock is held by then) and ``end`` when ``unlock_records`` runs (the lock is still
held). The benchmark rebuilds from them which process was inside which slot, and when.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import redis

import process_balancer

_connections: dict[str, redis.Redis] = {}


def _client(url: str) -> redis.Redis:
    if url not in _connections:
        _connections[url] = redis.Redis.from_url(url)
    return _connections[url]


class TimedIterationJob(process_balancer.Base):
    """``records`` records per iteration, each one taking ``record_time`` seconds."""

    def _event(self, kind: str, **extra: Any) -> None:
        event = {
            "ev": kind,
            "it": self._iteration_id,
            "job": self.job_id,
            "slot": self.worker_index,
            "pid": os.getpid(),
            "t": time.time(),
            "fence": self.fencing_token,
            **extra,
        }
        _client(self.options["redis_url"]).rpush(self.options["log_key"], json.dumps(event))

    def lock_records(self) -> range:
        self._iteration_id = uuid.uuid4().hex
        self._processed = 0
        self._event("start")
        return range(int(self.options["records"]))

    def process_record(self, record: Any) -> None:
        time.sleep(float(self.options["record_time"]))
        self._processed += 1

    def unlock_records(self) -> None:
        self._event("end", done=self._processed)
