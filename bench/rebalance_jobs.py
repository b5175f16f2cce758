"""The job ``bench/rebalance.py`` runs in real ``process-balancer run`` processes.

Every iteration appends two events to a Redis list: ``start`` once its records are claimed
(the worker lock is held by then) and ``end`` when ``unlock_records`` runs (the lock is still
held). The benchmark rebuilds from them which process was inside which slot, and when.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
import uuid
from typing import Any

import redis

import process_balancer

_connections: dict[str, redis.Redis] = {}


def _runner_pid() -> int:
    """The ``process-balancer run`` process: the parent when this runs in a worker child
    (``worker: process``), which the benchmark knows by its pid."""
    return os.getppid() if multiprocessing.parent_process() is not None else os.getpid()


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
            "pid": _runner_pid(),
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


class AsyncTimedIterationJob(process_balancer.AsyncBase):
    """The same iterations as :class:`TimedIterationJob`, for ``worker: asyncio``."""

    _event = TimedIterationJob._event

    async def lock_records(self) -> range:
        self._iteration_id = uuid.uuid4().hex
        self._processed = 0
        self._event("start")
        return range(int(self.options["records"]))

    async def process_record(self, record: Any) -> None:
        await asyncio.sleep(float(self.options["record_time"]))
        self._processed += 1

    async def unlock_records(self) -> None:
        self._event("end", done=self._processed)
