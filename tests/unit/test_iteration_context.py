"""A job's iteration contexts, on the thread and the asyncio kinds: entered in order around
every iteration that holds the lock, exited in reverse also after an exception or a lost
lock, and able to read the slot and its fencing token."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import process_balancer
from process_balancer.config.schema import JobConfig, resolve_job_class
from process_balancer.errors import ConfigError
from process_balancer.locks import LockContext, SimpleRedisLock
from process_balancer.runtime.wakeups import Notifier
from process_balancer.runtime.workers.asyncio_worker import AsyncWorker
from process_balancer.runtime.workers.base import Worker, WorkerSpec
from process_balancer.runtime.workers.thread import ThreadWorker
from support.harness import wait_until
from support.workers import IDENTITY


def traced(name: str):  # type: ignore[no-untyped-def]
    """A factory of a context that logs its entry (with the slot and token) and its exit
    (with the exception it saw) into the job's ``calls``."""

    @contextlib.contextmanager
    def context(job: process_balancer.Base) -> Iterator[None]:
        calls = job.options["calls"]
        calls.append(f"enter {name} {job.job_id}:{job.worker_index} fence={job.fencing_token}")
        try:
            yield
        except BaseException as exc:
            calls.append(f"exit {name} with {type(exc).__name__}")
            raise
        calls.append(f"exit {name}")

    context.__name__ = f"traced_{name}"
    return context


def traced_async(name: str):  # type: ignore[no-untyped-def]
    @contextlib.asynccontextmanager
    async def context(job: process_balancer.Base) -> AsyncIterator[None]:
        calls = job.options["calls"]
        await asyncio.sleep(0)
        calls.append(f"enter {name} {job.job_id}:{job.worker_index} fence={job.fencing_token}")
        try:
            yield
        except BaseException as exc:
            calls.append(f"exit {name} with {type(exc).__name__}")
            raise
        await asyncio.sleep(0)
        calls.append(f"exit {name}")

    return context


#: A module the config option names its factory in.
_module = types.ModuleType("pb_ctx_factories")
_module.configured = traced("configured")  # type: ignore[attr-defined]
_module.not_callable = 42  # type: ignore[attr-defined]
sys.modules["pb_ctx_factories"] = _module


class ThreadJob(process_balancer.Base):
    iteration_context = (traced("outer"), traced("inner"))

    def lock_records(self) -> list[int]:
        self.options["calls"].append("lock_records")
        return [1, 2]

    def process_record(self, record: Any) -> None:
        self.options["calls"].append(f"process_record:{record}")
        if self.options.get("raise_in") == record:
            raise RuntimeError("boom")
        time.sleep(float(self.options.get("record_time", 0)))

    def unlock_records(self) -> None:
        self.options["calls"].append("unlock_records")
        if self.options.get("abort", True):
            self.status_abort()


class AsyncJob(process_balancer.AsyncBase):
    iteration_context = (traced_async("outer"), traced("inner"))

    async def lock_records(self) -> list[int]:
        self.options["calls"].append("lock_records")
        return [1, 2]

    async def process_record(self, record: Any) -> None:
        self.options["calls"].append(f"process_record:{record}")
        if self.options.get("raise_in") == record:
            raise RuntimeError("boom")
        await asyncio.sleep(float(self.options.get("record_time", 0)))

    async def unlock_records(self) -> None:
        self.options["calls"].append("unlock_records")
        if self.options.get("abort", True):
            self.status_abort()


KINDS = {"thread": (ThreadWorker, ThreadJob), "asyncio": (AsyncWorker, AsyncJob)}


def start(backend, keeper, shared, kind: str, opts: dict[str, Any]) -> tuple[Worker, Any]:
    worker_type, job_class = KINDS[kind]
    spec = WorkerSpec(
        job_id="ctx",
        worker_index=2,
        job_class=job_class,
        options={"calls": [], **opts},
        driver_class=SimpleRedisLock,
        lock_context=LockContext(backend, backend.namespace, "ctx", 2, IDENTITY, 30.0),
        acquire_timeout=2.0,
    )
    done = threading.Event()
    worker = worker_type(
        spec, keeper=keeper, notifier=Notifier(), on_exit=lambda w: done.set(), shared=shared
    )
    worker.start()
    return worker, done


@pytest.mark.parametrize("kind", KINDS)
def test_contexts_wrap_the_iteration_in_order_and_see_the_slot_and_token(
    backend, keeper, shared, kind
) -> None:
    worker, done = start(
        backend, keeper, shared, kind, {"iteration_context": ["pb_ctx_factories:configured"]}
    )
    assert done.wait(10)
    calls = worker.spec.options["calls"]
    fence = calls[0].rsplit("=", 1)[1]
    assert int(fence) > 0
    assert calls == [
        f"enter outer ctx:2 fence={fence}",
        f"enter inner ctx:2 fence={fence}",
        f"enter configured ctx:2 fence={fence}",
        "lock_records",
        "process_record:1",
        "process_record:2",
        "unlock_records",
        "exit configured",
        "exit inner",
        "exit outer",
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_contexts_are_exited_after_an_exception_and_see_it(backend, keeper, shared, kind) -> None:
    worker, done = start(backend, keeper, shared, kind, {"raise_in": 1})
    assert done.wait(10)
    assert worker.outcome == "failed"
    assert worker.spec.options["calls"][-4:] == [
        "process_record:1",
        "unlock_records",
        "exit inner with RuntimeError",
        "exit outer with RuntimeError",
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_contexts_are_exited_after_a_lost_lock(backend, keeper, shared, kind) -> None:
    """The thread kind stops at the record boundary (the contexts exit cleanly); the asyncio
    kind cancels the running record, and its contexts see the cancellation."""
    worker, done = start(backend, keeper, shared, kind, {"record_time": 0.5, "abort": False})
    calls = worker.spec.options["calls"]
    wait_until(lambda: "process_record:1" in calls, 10, message="first record")
    assert keeper.revoke_all("test cut") == 1
    wait_until(lambda: calls.count("lock_records") == 2, 10, message="the next iteration")
    worker.stop("test over")
    assert done.wait(10)
    seen = "" if kind == "thread" else " with CancelledError"
    end = calls.index(f"exit outer{seen}")
    assert calls[end - 3 : end + 1] == [
        "process_record:1",
        "unlock_records",
        f"exit inner{seen}",
        f"exit outer{seen}",
    ]
    assert worker.lock_losses == 1


def test_an_async_context_in_a_thread_job_is_a_clear_error(backend, keeper, shared) -> None:
    class Mixed(ThreadJob):
        iteration_context = (traced_async("async"),)

    KINDS["mixed"] = (ThreadWorker, Mixed)
    try:
        worker, done = start(backend, keeper, shared, "mixed", {})
        assert done.wait(10)
    finally:
        del KINDS["mixed"]
    assert worker.outcome == "failed"
    assert "not a context manager (an async one needs an AsyncBase job)" in (worker.error or "")


def test_the_config_option_is_checked_when_the_job_classes_load(tmp_path: Path) -> None:
    config = JobConfig(
        "q",
        f"{__name__}:ThreadJob",
        None,
        30.0,
        10.0,
        {},
        iteration_context=("pb_ctx_factories:configured", "pb_ctx_factories:not_callable"),
    )
    with pytest.raises(ConfigError) as caught:
        resolve_job_class(config, Path("pb.yml"))
    assert list(caught.value.problems) == [
        "pb.yml: jobs.q.iteration_context[1]: 'pb_ctx_factories:not_callable' is not "
        "callable; name a function or class that takes the job and returns a context manager"
    ]
