"""Job classes used by the integration tests; they log every iteration to a file.

Each iteration pushes a ``start`` event when it has claimed its records (worker lock held)
and an ``end`` event when ``unlock_records`` runs, so tests can rebuild the interval during
which each process was inside each slot and check that no two overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import process_balancer


def _now() -> float:
    """The wall clock as the test sees it: a runner whose clock a test shifted (through the
    preload library of ``support.servers``) logs its times without the shift, so its
    iterations compare with everyone else's."""
    now = time.time()
    path = os.environ.get("PB_CLOCK_OFFSET_FILE")
    if path:
        try:
            with open(path) as f:
                now -= float(f.read().strip().rstrip("s") or 0)
        except (OSError, ValueError):
            pass
    return now


class RecordingJob(process_balancer.Base):
    """Claims ``records`` records per iteration, each taking ``record_time`` seconds."""

    def _log(self, event: str, **fields: Any) -> None:
        entry = {
            "ev": event,
            "job": self.job_id,
            "slot": self.worker_index,
            "pid": os.getpid(),
            "t": _now(),
            "fence": self.fencing_token,
            "count": self.worker_count,
            "gen": self.generation,
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


# The fenced store of FencedJob: one Redis key per slot holds the highest fencing token that
# claimed it, and every operation on a slot takes the next number of one counter, so the
# order in which the store saw claims and writes is known exactly.
_CLAIM = """
local seq = redis.call('INCR', KEYS[2])
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1])
  return {1, seq}
end
return {0, seq}
"""
_WRITE = """
local seq = redis.call('INCR', KEYS[2])
if tonumber(redis.call('GET', KEYS[1]) or '-1') == tonumber(ARGV[1]) then
  return {1, seq}
end
return {0, seq}
"""
_stores: dict[str, Any] = {}


def _store(url: str) -> Any:
    import redis

    if url not in _stores:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        _stores[url] = (client, client.register_script(_CLAIM), client.register_script(_WRITE))
    return _stores[url]


class FencedJob(RecordingJob):
    """A RecordingJob whose work is writes to a fenced store, as a real job's should be.

    ``lock_records`` claims the slot in the store with the iteration's fencing token: the
    claim lands only if the token is higher than every token that claimed the slot before.
    Each record is then one write that lands only while the slot still carries this token.
    A holder that was paused or cut off while a peer took its slot over finds its writes
    refused. Every write is logged (``ev: "w"``) with the store's sequence number and
    whether it landed. The store is the Redis at option ``store_url`` (never the
    coordination backend under test) under keys ``<store_prefix>:<job>:<slot>``.
    """

    def _keys(self) -> list[str]:
        prefix = f"{self.options['store_prefix']}:{self.job_id}:{self.worker_index}"
        return [prefix, f"{prefix}:seq"]

    def lock_records(self) -> list[int]:
        self._iteration = uuid.uuid4().hex
        self._done = 0
        _, claim, _ = _store(self.options["store_url"])
        ok, seq = claim(keys=self._keys(), args=[self.fencing_token])
        self._log("start", it=self._iteration, claim_ok=bool(ok), seq=seq)
        return list(range(int(self.options.get("records", 1))))

    def process_record(self, record: int) -> None:
        time.sleep(float(self.options.get("record_time", 0.05)))
        _, _, write = _store(self.options["store_url"])
        ok, seq = write(keys=self._keys(), args=[self.fencing_token])
        self._log("w", it=self._iteration, seq=seq, ok=bool(ok))
        self._done += 1


class AsyncRecordingJob(process_balancer.AsyncBase):
    """RecordingJob with coroutines: each record awaits ``record_time`` seconds.

    Besides ``start`` and ``end`` it logs ``before`` and ``after`` (the hooks) and ``cancel``
    when a record is cancelled (a stop or a lost lock). With option ``record_log``, each
    record is also logged as support.record_log's records are, also when it was cancelled,
    so a record that ran on two processes at once is seen even if one was cut short.
    """

    _log = RecordingJob._log

    async def before_perform(self) -> None:
        if self.options.get("log_hooks"):
            self._log("before")

    async def lock_records(self) -> list[int]:
        self._iteration = uuid.uuid4().hex
        self._done = 0
        self._log("start", it=self._iteration)
        return list(range(int(self.options.get("records", 1))))

    async def process_record(self, record: int) -> None:
        started = _now()
        try:
            await asyncio.sleep(float(self.options.get("record_time", 0.05)))
        except asyncio.CancelledError:
            self._log("cancel", it=self._iteration, record=record)
            raise
        finally:
            if "record_log" in self.options:
                _append(self.options["record_log"], self._record(started))
        self._done += 1

    def _record(self, started: float) -> dict[str, Any]:
        return {
            "job": self.job_id,
            "slot": self.worker_index,
            "pid": os.getpid(),
            "fence": self.fencing_token,
            "start": started,
            "end": _now(),
        }

    async def unlock_records(self) -> None:
        self._log("end", it=self._iteration, done=self._done)
        pause = self.options.get("sleep_after")
        if pause:
            self.status_sleep(float(pause))

    async def after_perform(self) -> None:
        if self.options.get("log_hooks"):
            self._log("after")


class AsyncFailingJob(AsyncRecordingJob):
    """Raises in every process_record, so its worker keeps failing and restarting."""

    async def process_record(self, record: int) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("boom from AsyncFailingJob")

    async def after_perform(self) -> None:
        self._log("after")


class AsyncBlockingJob(AsyncRecordingJob):
    """Blocks the event loop in every record with ``time.sleep(block)``: the mistake the
    runner measures as event-loop lag and reports."""

    async def process_record(self, record: int) -> None:
        time.sleep(float(self.options.get("block", 0.5)))
        self._done += 1


def _append(path: str, entry: dict[str, Any]) -> None:
    line = (json.dumps(entry) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@contextlib.contextmanager
def logged_context(job: RecordingJob) -> Iterator[None]:
    """An ``iteration_context`` factory: logs ``ctx-enter`` with the token it sees and
    ``ctx-exit`` with the exception the iteration ended with, if any."""
    job._log("ctx-enter", seen=job.fencing_token)
    try:
        yield
    except BaseException as exc:
        job._log("ctx-exit", error=type(exc).__name__)
        raise
    job._log("ctx-exit", error=None)


@contextlib.asynccontextmanager
async def logged_async_context(job: AsyncRecordingJob) -> AsyncIterator[None]:
    """The same as an async context manager, for AsyncBase jobs."""
    await asyncio.sleep(0)
    job._log("ctx-enter", seen=job.fencing_token)
    try:
        yield
    except BaseException as exc:
        job._log("ctx-exit", error=type(exc).__name__)
        raise
    await asyncio.sleep(0)
    job._log("ctx-exit", error=None)


class ChildRecordingJob(RecordingJob):
    """A RecordingJob for the ``process`` worker kind: its events name the runner (the
    child's parent) as ``pid``, as a thread job's do, and the child itself as ``child``."""

    def _log(self, event: str, **fields: Any) -> None:
        super()._log(event, **{"pid": os.getppid(), "child": os.getpid(), **fields})


class ChildFailingJob(ChildRecordingJob):
    def process_record(self, record: int) -> None:
        raise RuntimeError("boom from ChildFailingJob")
