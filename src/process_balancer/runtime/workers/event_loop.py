"""The one asyncio event loop of a process, shared by all its asyncio slots.

The loop runs on a thread of its own, started when the first asyncio slot starts and stopped
when the process exits; its lag is measured and reported by a :class:`LagMonitor`
(``loop_lag.py``).

Blocking calls of the runner itself (taking and releasing worker locks, backend round
trips) never run on the loop: :meth:`EventLoop.run_blocking` hands them to helper threads.

The threads (the loop's, the watchdog's, the helpers') come from the runtime's kernel; what
runs on them does not follow the kernel's clock: asyncio keeps real time, and the helpers
wait on a :class:`queue.SimpleQueue`. The deterministic simulation drives thread jobs only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import traceback
from collections.abc import Callable, Coroutine
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import TimeoutError as ThreadTimeout
from typing import Any, TypeVar

from ...config import defaults
from ..kernel import SYSTEM, EventLike, Kernel, ThreadLike
from .loop_lag import LagMonitor, Slot

logger = logging.getLogger(__name__)

T = TypeVar("T")


class LoopEvent:
    """A kernel event that coroutines on the loop can also await (:meth:`wait_async`).

    ``set`` may be called from any thread (a stop request, a backend event); ``clear`` and
    ``wait_async`` only on the loop. A set is never lost: the awaited event is set on the
    loop after the flag, so it lands after any clear made before the flag was set.
    """

    def __init__(self, host: EventLoop, event: EventLike) -> None:
        self._host = host
        self._event = event
        self._awaited = asyncio.Event()

    def set(self) -> None:
        self._event.set()
        self._host.call_soon(self._awaited.set)

    def clear(self) -> None:
        self._event.clear()
        self._awaited.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    async def wait_async(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for :meth:`set`; True if it was set."""
        if self._event.is_set():
            return True
        try:
            await asyncio.wait_for(self._awaited.wait(), timeout)
        except asyncio.TimeoutError:
            return self._event.is_set()
        return True


class EventLoop:
    """The asyncio loop of one process (a shared resource of the asyncio kind)."""

    #: Most helper threads making blocking calls for the slots at once.
    MAX_HELPERS = 16
    #: Seconds the loop's thread is given to finish cancelled slots when the process exits.
    CLOSE_TIMEOUT = 3.0

    def __init__(
        self, kernel: Kernel = SYSTEM, warn_after: float = defaults.EVENT_LOOP_LAG_WARNING
    ) -> None:
        self._kernel = kernel
        self._mutex = kernel.lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[ThreadLike] = []
        self._closing = kernel.event()
        self._closed = False
        #: The loop's lag, and the slots it may name when they block the loop.
        self.lag = LagMonitor(kernel, warn_after)
        # Helper threads for blocking calls, started while calls wait and none is idle.
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None]
        self._calls = queue.SimpleQueue()
        self._helpers = 0  # started
        self._idle = 0  # waiting for a call
        self._queued = 0  # calls not yet taken by a helper

    # -- running coroutines ------------------------------------------------------------------

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._mutex:
            if self._closed:
                raise RuntimeError("the asyncio event loop of this process has been closed")
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self.lag.start()
                self._threads = [
                    self._kernel.thread(self._run, "pb-asyncio"),
                    self._kernel.thread(
                        lambda: self.lag.watch(self._closing), "pb-asyncio-watchdog"
                    ),
                ]
                for thread in self._threads:
                    thread.start()
                logger.info("started the event loop of the asyncio workers")
            return self._loop

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> ThreadFuture[T]:
        """Run ``coroutine`` as a task on the loop (started if need be)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._started())

    def call_soon(self, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` on the loop soon; from any thread, never blocking. Nothing
        happens once the loop is closed (its slots are over)."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # closed: its slots are over
            loop.call_soon_threadsafe(callback, *args)

    async def run_blocking(self, call: Callable[[], T]) -> T:
        """``call()`` made on a helper thread, so the loop goes on meanwhile."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._mutex:
            self._queued += 1
            start = self._queued > self._idle and self._helpers < self.MAX_HELPERS
            if start:
                self._helpers += 1
            number = self._helpers
        self._calls.put((call, future))
        if start:
            self._kernel.thread(self._helper, f"pb-asyncio-call-{number}").start()
        return await future

    def _helper(self) -> None:
        while True:
            with self._mutex:
                self._idle += 1
            item = self._calls.get()
            with self._mutex:
                self._idle -= 1
            if item is None:
                return
            with self._mutex:
                self._queued -= 1
            call, future = item
            try:
                result = call()
            except BaseException as exc:
                self.call_soon(_settle, future, None, exc)
            else:
                self.call_soon(_settle, future, result, None)

    # -- the slots, for naming the one that blocks -------------------------------------------

    def register(self, slot: Slot) -> None:
        self.lag.register(slot)

    def unregister(self, slot: Slot) -> None:
        self.lag.unregister(slot)

    # -- the loop's thread -------------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        self.lag.thread_id = threading.get_ident()
        asyncio.set_event_loop(loop)
        beat = loop.create_task(self.lag.beat(), name="pb-event-loop-lag")
        try:
            loop.run_forever()
            beat.cancel()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=self.CLOSE_TIMEOUT))
            loop.run_until_complete(loop.shutdown_asyncgens())
        except Exception:
            logger.exception("the event loop of the asyncio workers failed")
        finally:
            loop.close()

    def close(self) -> None:
        """Cancel what still runs on the loop (its ``unlock_records`` still run), stop it
        and its threads; waits at most :attr:`CLOSE_TIMEOUT` seconds for a blocked loop."""
        with self._mutex:
            loop, self._closed = self._loop, True
        if loop is None:
            return
        self._closing.set()
        self.call_soon(loop.stop)
        loop_thread = self._threads[0]
        loop_thread.join(self.CLOSE_TIMEOUT + 1)
        if loop_thread.is_alive():
            logger.warning(
                "the event loop of the asyncio workers did not stop within %.0fs (something "
                "blocks it); exiting without it",
                self.CLOSE_TIMEOUT + 1,
            )
        with self._mutex:
            helpers = self._helpers
        for _ in range(helpers):
            self._calls.put(None)

    def dump(self, timeout: float = 1.0) -> str:
        """The stack of every task on the loop, read on the loop itself; if it does not answer
        within ``timeout`` it is blocked, and the thread dump shows where."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return ""
        answer: ThreadFuture[str] = ThreadFuture()
        self.call_soon(lambda: answer.set_result(_task_stacks(loop)))
        try:
            return answer.result(timeout)
        except ThreadTimeout:
            return (
                f"\nasyncio tasks: the event loop did not answer within {timeout:g}s; the "
                "pb-asyncio thread's stack above shows what blocks it\n"
            )

    def describe(self) -> dict[str, Any]:
        """The loop's part of the process's heartbeat info (nothing before it started)."""
        if self._loop is None:
            return {}
        return {"event_loop": self.lag.describe()}


def _task_stacks(loop: asyncio.AbstractEventLoop) -> str:
    """Each task's await chain, outermost first (``Task.get_stack`` stops at the task's own
    coroutine, which says little: the record is awaited below it)."""
    parts = ["\nasyncio tasks:"]
    for task in sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name()):
        frames = []
        awaited: Any = task.get_coro()
        while awaited is not None:
            frame = _first_of(awaited, "cr_frame", "ag_frame", "gi_frame")
            if frame is not None:
                frames.append((frame, frame.f_lineno))
            awaited = _first_of(awaited, "cr_await", "ag_await", "gi_yieldfrom")
        stack = "".join(traceback.format_list(traceback.StackSummary.extract(frames)))
        parts.append(f"Task {task.get_name()}:\n{stack}")
    return "\n".join(parts) + "\n"


def _first_of(awaitable: Any, *names: str) -> Any:
    """The first of these attributes that is set (coroutines, async generators and
    generators name their frame and what they await differently)."""
    for name in names:
        value = getattr(awaitable, name, None)
        if value is not None:
            return value
    return None


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
