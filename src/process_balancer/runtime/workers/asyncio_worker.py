"""The asyncio worker kind: each slot of an AsyncBase job is a task on the process's one
event loop (``event_loop.py``), not a thread.

The iteration is the base's, awaited: the same lock plan (its backend calls made on helper
threads), the same lease, the same bookkeeping. What differs is how an iteration is cut: a
stop or a lost lock cancels the task running ``lock_records`` and the records, so the
running record ends at its next ``await`` instead of at its end; ``unlock_records``, the
iteration contexts' exits and ``after_perform`` still run.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, cast

from ...job import AsyncBase
from ..kernel import SYSTEM, Kernel
from ..leases import Lease, LeaseKeeper
from ..wakeups import Notifier
from .base import Worker, WorkerSpec
from .contexts import enter_all_async
from .event_loop import EventLoop, LoopEvent
from .plan import run_plan_async
from .shared import SharedResources

__all__ = ["AsyncWorker"]


async def _settle(value: Any) -> Any:
    """A hook's result, awaited when it is awaitable (a hook may be a plain method)."""
    if inspect.isawaitable(value):
        return await value
    return value


class AsyncWorker(Worker):
    """Runs the slot's iterations as a task on the process's shared event loop."""

    kind = "asyncio"

    def __init__(
        self,
        spec: WorkerSpec,
        *,
        keeper: LeaseKeeper,
        notifier: Notifier,
        on_exit: Callable[[Worker], None],
        kernel: Kernel = SYSTEM,
        shared: SharedResources | None = None,
    ) -> None:
        super().__init__(
            spec, keeper=keeper, notifier=notifier, on_exit=on_exit, kernel=kernel, shared=shared
        )
        self.host = self.shared.get("asyncio", lambda: EventLoop(kernel))
        # Waits of the slot (the lock plan's pauses, status_sleep) are awaited on the loop.
        self._stop_event = self._stopped = LoopEvent(self.host, self._stop_event)
        self._wake = self._woken = LoopEvent(self.host, self._wake)
        self.control.stop_event = self._stopped
        self._finished = kernel.event()
        self._slot_task: asyncio.Task[Any] | None = None
        self._records_task: asyncio.Task[None] | None = None
        self._cancelled_task: asyncio.Task[None] | None = None
        self._claiming = False  # the records task is in lock_records or the records
        self.label = f"job {spec.job_id} worker {spec.worker_index}"
        try:
            self.source: str | None = inspect.getsourcefile(spec.job_class)
        except TypeError:
            self.source = None

    # -- the kind ----------------------------------------------------------------------------

    def start(self) -> None:
        self.host.submit(self._run_slot())

    def is_alive(self) -> bool:
        return not self._finished.is_set()

    def join(self, timeout: float | None = None) -> None:
        self._finished.wait(timeout)

    def stop(self, reason: str) -> None:
        super().stop(reason)
        self.host.call_soon(self._cancel_records, None)

    def _lease_lost(self, lease: Lease) -> None:
        super()._lease_lost(lease)
        self.host.call_soon(self._cancel_records, lease)

    def _cancel_records(self, lease: Lease | None) -> None:
        """On the loop: cancel the running records (for ``lease``, if given) once."""
        if lease is not None and lease is not self._lease:
            return  # an answer about an iteration that is over
        task = self._records_task
        if task is None or task.done() or not self._claiming or task is self._cancelled_task:
            return
        self._cancelled_task = task
        task.cancel()

    def running_on_loop(self) -> bool:
        """This slot's code is executing on the loop now (for the loop's watchdog)."""
        for task in (self._records_task, self._slot_task):
            if task is not None and getattr(task.get_coro(), "cr_running", False):
                return True
        return False

    # -- the protocol, awaited ---------------------------------------------------------------

    async def _run_slot(self) -> None:
        self._slot_task = asyncio.current_task()
        if self._slot_task is not None:  # named as the thread kind names its threads
            self._slot_task.set_name(f"pb-{self.spec.job_id}-{self.spec.worker_index}")
        self.host.register(self)
        control = self.control
        try:
            job = cast(AsyncBase, self.make_job())
            while not self._halt:
                await self._iteration_async(job)
                if self._aborted(job):
                    return
                pause = control.sleep_for
                if pause:
                    await self._stopped.wait_async(pause)
            self.outcome = "stopped"
        except Exception as exc:
            self._failed(exc)
        finally:
            self.host.unregister(self)
            self._finished.set()
            self._on_exit(self)

    async def _iteration_async(self, job: AsyncBase) -> None:
        self.control.sleep_for = None
        try:
            await _settle(job.before_perform())
            lease = await run_plan_async(
                self._acquire_plan(), self._woken.wait_async, self.host.run_blocking
            )
            if lease is None:
                self.skipped += 1
                return
            began = self._begin(job, lease)
            try:
                await self._process_async(job, lease)
            finally:
                await self.host.run_blocking(lambda: self._end(job, lease, began))
            self.iterations += 1
            self.succeeded = True
        finally:
            await _settle(job.after_perform())

    async def _process_async(self, job: AsyncBase, lease: Lease) -> None:
        if self._ran_out(lease):
            return
        try:
            if self._contexts:
                async with await enter_all_async(self._contexts, job):
                    await self._records_in_task(job, lease)
            else:
                await self._records_in_task(job, lease)
        except asyncio.CancelledError:
            # Cancelled by a stop or a lost lock: the iteration ends, as at a record boundary.
            if self._cancelled_task is None or not self._cancelled_task.cancelled():
                raise
        finally:
            self._cancelled_task = None
        self._outlived(lease)

    async def _records_in_task(self, job: AsyncBase, lease: Lease) -> None:
        """The records run as a task of their own, the one a stop or a lost lock cancels."""
        task = asyncio.get_running_loop().create_task(
            self._records_async(job, lease), name=f"pb-{job.job_id}-{job.worker_index}-records"
        )
        self._records_task = task
        try:
            await task
        finally:
            self._records_task = None

    async def _records_async(self, job: AsyncBase, lease: Lease) -> None:
        if self._ran_out(lease):
            return  # checked again: on a busy loop the task may begin well after it was made
        primary: BaseException | None = None
        self._claiming = True
        try:
            records = await _settle(job.lock_records())
            if records is not None:
                await self._each(job, records)
        except BaseException as exc:
            primary = exc
            raise
        finally:
            self._claiming = False
            try:
                await _settle(job.unlock_records())
            except Exception:
                if primary is None:
                    raise
                self._unlock_failed(job)

    async def _each(self, job: AsyncBase, records: Any) -> None:
        process: Callable[[Any], Coroutine[Any, Any, None] | None] = job.process_record
        count = 0
        try:
            if hasattr(records, "__aiter__"):
                iterator: AsyncIterator[Any] = records.__aiter__()
                try:
                    async for record in iterator:
                        if self._cut:
                            break
                        result = process(record)
                        if result is not None:
                            await result
                        count += 1
                finally:
                    close = getattr(iterator, "aclose", None)
                    if close is not None:
                        await close()
            else:
                for record in records:
                    if self._cut:
                        break
                    result = process(record)
                    if result is not None:
                        await result
                    count += 1
        finally:
            self.records += count
