"""The asyncio worker kind in-process, on the in-memory backend: the iteration protocol
awaited, cancellation at the next await, one shared event loop and its lag."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

import process_balancer
from process_balancer.backends.memory import MemoryBackend
from process_balancer.locks import LockContext, SimpleRedisLock
from process_balancer.runtime.leases import LeaseKeeper
from process_balancer.runtime.wakeups import Notifier
from process_balancer.runtime.workers import kind_for
from process_balancer.runtime.workers.asyncio_worker import AsyncWorker
from process_balancer.runtime.workers.base import WorkerSpec
from process_balancer.runtime.workers.event_loop import EventLoop
from process_balancer.runtime.workers.shared import SharedResources
from support.harness import wait_until
from support.workers import IDENTITY


class Scripted(process_balancer.AsyncBase):
    """Records every call; raises where ``options['raise_in']`` says; each record awaits
    ``options['record_time']`` seconds (recording a cancellation)."""

    async def _call(self, name: str) -> None:
        self.options["calls"].append(name)
        if self.options.get("raise_in") == name:
            raise RuntimeError(f"raised in {name}")

    async def before_perform(self) -> None:
        await self._call("before_perform")

    async def lock_records(self) -> list[int]:
        await self._call("lock_records")
        self.options["fences"].append(self.fencing_token)
        self.options["threads"].add(threading.get_ident())
        return list(range(1, int(self.options.get("records", 2)) + 1))

    async def process_record(self, record: Any) -> None:
        await self._call(f"process_record:{record}")
        try:
            await asyncio.sleep(float(self.options.get("record_time", 0)))
        except asyncio.CancelledError:
            self.options["calls"].append(f"cancelled:{record}")
            raise

    async def unlock_records(self) -> None:
        await self._call("unlock_records")
        if self.options.get("abort", True):
            self.status_abort()
        pause = self.options.get("sleep")
        if pause:
            self.status_sleep(pause)

    async def after_perform(self) -> None:
        await self._call("after_perform")


def options(**extra: Any) -> dict[str, Any]:
    return {"calls": [], "fences": [], "threads": set(), **extra}


def make_worker(
    backend: MemoryBackend,
    keeper: LeaseKeeper,
    shared: SharedResources,
    job_class: type,
    opts: dict[str, Any],
    index: int = 0,
    done: threading.Event | None = None,
) -> AsyncWorker:
    spec = WorkerSpec(
        job_id="j",
        worker_index=index,
        job_class=job_class,
        options=opts,
        driver_class=SimpleRedisLock,
        lock_context=LockContext(backend, backend.namespace, "j", index, IDENTITY, 30.0),
        acquire_timeout=2.0,
    )
    finished = done or threading.Event()
    return AsyncWorker(
        spec,
        keeper=keeper,
        notifier=Notifier(),
        on_exit=lambda w: finished.set(),
        shared=shared,
    )


def run_worker(backend, keeper, shared, job_class: type, opts: dict[str, Any]) -> AsyncWorker:
    done = threading.Event()
    worker = make_worker(backend, keeper, shared, job_class, opts, done=done)
    worker.start()
    assert done.wait(10), "worker did not finish"
    worker.join(5)
    assert not worker.is_alive()
    return worker


def test_an_asyncbase_job_runs_on_the_asyncio_kind_by_default() -> None:
    assert kind_for(Scripted, None) == "asyncio"
    assert kind_for(process_balancer.Base, None) == "thread"
    with pytest.raises(ValueError, match="only the asyncio kind runs"):
        kind_for(Scripted, "thread")
    with pytest.raises(ValueError, match="the asyncio kind runs AsyncBase jobs"):
        kind_for(process_balancer.Base, "asyncio")


def test_iteration_runs_in_contract_order_on_the_event_loop_thread(backend, keeper, shared) -> None:
    opts = options()
    worker = run_worker(backend, keeper, shared, Scripted, opts)
    assert worker.outcome == "aborted"
    assert opts["calls"] == [
        "before_perform",
        "lock_records",
        "process_record:1",
        "process_record:2",
        "unlock_records",
        "after_perform",
    ]
    assert worker.records == 2 and worker.iterations == 1
    assert len(opts["fences"]) == 1 and opts["fences"][0] > 0
    (thread,) = opts["threads"]
    assert thread != threading.get_ident()
    assert backend.lock_acquire("j:0", "other:2:x", 30) is not None, "the lock was released"


class AsyncGenerated(Scripted):
    """lock_records is an async generator: records are produced as they are awaited."""

    async def lock_records(self) -> AsyncIterator[int]:  # type: ignore[override]
        self.options["calls"].append("lock_records")
        for record in (1, 2, 3):
            await asyncio.sleep(0)
            yield record


class AsyncIterableRecords(Scripted):
    """lock_records returns an object with __aiter__."""

    async def lock_records(self) -> Any:
        await self._call("lock_records")

        class Records:
            def __aiter__(self) -> AsyncIterator[int]:
                return self._gen()

            async def _gen(self) -> AsyncIterator[int]:
                for record in (7, 8):
                    yield record

        return Records()


@pytest.mark.parametrize(
    ("job_class", "records"), [(AsyncGenerated, [1, 2, 3]), (AsyncIterableRecords, [7, 8])]
)
def test_lock_records_may_return_an_async_iterable(
    backend, keeper, shared, job_class, records
) -> None:
    opts = options()
    worker = run_worker(backend, keeper, shared, job_class, opts)
    assert worker.outcome == "aborted"
    assert [c for c in opts["calls"] if c.startswith("process_record")] == [
        f"process_record:{r}" for r in records
    ]
    assert opts["calls"][-2:] == ["unlock_records", "after_perform"]


@pytest.mark.parametrize("where", ["lock_records", "process_record:1"])
def test_unlock_and_after_perform_run_after_an_exception(backend, keeper, shared, where) -> None:
    opts = options(raise_in=where)
    worker = run_worker(backend, keeper, shared, Scripted, opts)
    assert worker.outcome == "failed"
    assert worker.error == f"RuntimeError: raised in {where}"
    assert opts["calls"][-2:] == ["unlock_records", "after_perform"]


class PlainHooks(process_balancer.AsyncBase):
    """Only process_record is a coroutine; the other methods are plain ones."""

    def lock_records(self) -> list[int]:  # type: ignore[override]
        return [1, 2, 3]

    async def process_record(self, record: Any) -> None:
        self.options["calls"].append(record)

    def unlock_records(self) -> None:  # type: ignore[override]
        self.options["calls"].append("unlock")
        self.status_abort()


def test_methods_may_be_plain_functions(backend, keeper, shared) -> None:
    opts = options()
    worker = run_worker(backend, keeper, shared, PlainHooks, opts)
    assert worker.outcome == "aborted"
    assert opts["calls"] == [1, 2, 3, "unlock"]


def test_a_stop_cancels_the_running_record_at_its_next_await(backend, keeper, shared) -> None:
    """Given a record awaiting for 30 s, when the worker is stopped, then that record is
    cancelled at once, unlock_records and after_perform run and the worker ends stopped."""
    opts = options(record_time=30, records=3, abort=False)
    done = threading.Event()
    worker = make_worker(backend, keeper, shared, Scripted, opts, done=done)
    worker.start()
    wait_until(lambda: "process_record:1" in opts["calls"], 10, message="first record")
    stopped_at = time.monotonic()
    worker.stop("test over")
    assert done.wait(5)
    assert time.monotonic() - stopped_at < 1.0
    assert worker.outcome == "stopped"
    assert opts["calls"][-4:] == [
        "process_record:1",
        "cancelled:1",
        "unlock_records",
        "after_perform",
    ]
    assert worker.records == 0 and worker.lock_losses == 0


def test_a_lost_lock_cancels_the_record_and_the_next_iteration_takes_it_afresh(
    backend, keeper, shared
) -> None:
    opts = options(record_time=30, records=2, abort=False)
    done = threading.Event()
    worker = make_worker(backend, keeper, shared, Scripted, opts, done=done)
    worker.start()
    wait_until(lambda: "process_record:1" in opts["calls"], 10, message="first record")
    assert keeper.revoke_all("test cut") == 1
    wait_until(lambda: opts["calls"].count("lock_records") == 2, 10, message="next iteration")
    first = opts["calls"][: opts["calls"].index("after_perform") + 1]
    assert first[-3:] == ["cancelled:1", "unlock_records", "after_perform"]
    assert worker.lock_losses == 1 and worker.outcome is None
    assert opts["fences"][1] > opts["fences"][0]
    worker.stop("test over")
    assert done.wait(5)
    assert worker.outcome == "stopped"


class Swallowing(Scripted):
    """Catches the cancellation of its record and carries on."""

    async def process_record(self, record: Any) -> None:
        self.options["calls"].append(f"process_record:{record}")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.options["calls"].append(f"swallowed:{record}")


def test_a_job_that_swallows_the_cancellation_still_stops_at_the_record_boundary(
    backend, keeper, shared
) -> None:
    opts = options(records=3, abort=False)
    done = threading.Event()
    worker = make_worker(backend, keeper, shared, Swallowing, opts, done=done)
    worker.start()
    wait_until(lambda: "process_record:1" in opts["calls"], 10, message="first record")
    worker.stop("test over")
    assert done.wait(5)
    assert opts["calls"][-4:] == [
        "process_record:1",
        "swallowed:1",
        "unlock_records",
        "after_perform",
    ]


def test_every_async_slot_shares_one_loop_and_status_sleep_blocks_none(
    backend, keeper, shared
) -> None:
    """Slot 0 sleeps 30 s between iterations (status_sleep) while slot 1 keeps iterating on
    the same loop; a stop cuts the sleep short."""
    sleepy = options(sleep=30, abort=False)
    busy = options(abort=False)
    done = [threading.Event(), threading.Event()]
    workers = [
        make_worker(backend, keeper, shared, Scripted, sleepy, index=0, done=done[0]),
        make_worker(backend, keeper, shared, Scripted, busy, index=1, done=done[1]),
    ]
    for worker in workers:
        worker.start()
    wait_until(lambda: busy["calls"].count("after_perform") >= 20, 10, message="20 iterations")
    assert sleepy["calls"].count("after_perform") == 1
    assert sleepy["threads"] == busy["threads"] and len(sleepy["threads"]) == 1
    assert [t.name for t in threading.enumerate()].count("pb-asyncio") == 1
    stopped_at = time.monotonic()
    for worker in workers:
        worker.stop("test over")
    assert done[0].wait(5) and done[1].wait(5)
    assert time.monotonic() - stopped_at < 1.0


def test_the_loop_starts_with_the_first_async_slot_and_stops_when_closed(backend, keeper) -> None:
    resources = SharedResources()
    assert resources.describe() == {}
    run_worker(backend, keeper, resources, Scripted, options())
    info = resources.describe()["event_loop"]
    assert info["slots"] == 0 and info["stalls"] == 0
    assert "pb-asyncio" in [t.name for t in threading.enumerate()]
    resources.close()
    wait_until(
        lambda: "pb-asyncio" not in [t.name for t in threading.enumerate()],
        5,
        message="the loop's thread to end",
    )


class Blocking(Scripted):
    """Blocks the event loop with time.sleep in its first record."""

    async def process_record(self, record: Any) -> None:
        self.options["calls"].append(f"process_record:{record}")
        if record == 1:
            time.sleep(0.6)  # the mistake the runner must report


def test_a_blocking_call_is_measured_as_lag_and_names_the_slot(
    backend, keeper, shared, caplog: pytest.LogCaptureFixture
) -> None:
    opts = options(records=2, abort=False, sleep=0.05)
    done = threading.Event()
    worker = make_worker(backend, keeper, shared, Blocking, opts, index=3, done=done)
    with caplog.at_level(logging.WARNING, logger="process_balancer.runtime.workers.event_loop"):
        worker.start()
        host = worker.host
        wait_until(lambda: host.lag.stalls >= 3, 10, message="three stalls measured")
        info = shared.describe()["event_loop"]
        assert info["lag"] >= 0.45
        assert info["slots"] == 1
        assert info["last_stall"]["slot"] == "job j worker 3"
        assert info["last_stall"]["where"].endswith("in process_record")
        assert "test_async_worker.py" in info["last_stall"]["where"]
        worker.stop("test over")
        assert done.wait(5)
    # One warning names the slot and the line; the next stalls of the same slot within
    # WARN_EVERY are counted, not logged again.
    blocked = [r.getMessage() for r in caplog.records if "blocked" in r.getMessage()]
    assert len(blocked) == 1, blocked
    assert "by job j worker 3 (at " in blocked[0] and "in process_record" in blocked[0]


def test_lag_stays_small_without_blocking_calls(backend, keeper, shared) -> None:
    opts = options(record_time=0.01, records=5, abort=False)
    done = threading.Event()
    worker = make_worker(backend, keeper, shared, Scripted, opts, done=done)
    worker.start()
    time.sleep(1.0)
    host: EventLoop = worker.host
    assert host.lag.stalls == 0
    assert host.lag.recent_lag() < 0.1
    worker.stop("test over")
    assert done.wait(5)


def test_a_stack_dump_lists_every_task_on_the_loop(backend, keeper, shared) -> None:
    """TTIN and the dump command add each asyncio task's stack to the thread dump."""
    opts = options(record_time=30, abort=False)
    done = threading.Event()
    worker = make_worker(backend, keeper, shared, Scripted, opts, index=5, done=done)
    worker.start()
    wait_until(lambda: "process_record:1" in opts["calls"], 10, message="first record")
    dump = shared.dump()
    assert "asyncio tasks:" in dump and "pb-event-loop-lag" in dump
    assert "pb-j-5-records" in dump and "in process_record" in dump
    worker.stop("test over")
    assert done.wait(5)
