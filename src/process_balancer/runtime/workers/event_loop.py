"""The one asyncio event loop of a process, shared by all its asyncio slots, and its lag.

The loop runs on a thread of its own, started when the first asyncio slot starts and stopped
when the process exits. A coroutine on it wakes every :attr:`EventLoop.INTERVAL` seconds and
measures how late it woke: that lateness is the loop's *lag*, the time every slot on it
waited because something did not yield. A watchdog thread sees a stall while it lasts and
names the slot whose code is running on the loop (and where), so a blocking call in a job
(``time.sleep``, a synchronous client) is reported with the slot to fix.

Blocking calls of the runner itself (taking and releasing worker locks, backend round
trips) never run on the loop: :meth:`EventLoop.run_blocking` hands them to helper threads.
asyncio's own machinery keeps real time; the threads come from the runtime's kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import sys
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future as ThreadFuture
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ...config import defaults
from ..kernel import SYSTEM, EventLike, Kernel, ThreadLike

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Slot(Protocol):
    """What the watchdog asks of an asyncio slot to name the one blocking the loop."""

    label: str  # "job <job_id> worker <index>"
    source: str | None  # the job class's source file, to point at the line in the job

    def running_on_loop(self) -> bool:
        """Its code is executing on the loop right now (not suspended at an await)."""


@dataclass(frozen=True)
class Suspect:
    label: str
    where: str


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

    #: Seconds between two wake-ups of the lag-measuring coroutine.
    INTERVAL = 0.1
    #: Seconds between two looks of the watchdog at the loop.
    WATCH_TICK = 0.05
    #: The lag reported is the largest of the last WINDOW seconds (two half windows).
    WINDOW = 10.0
    #: Most helper threads making blocking calls for the slots at once.
    MAX_HELPERS = 16
    #: Seconds the loop's thread is given to finish cancelled slots when the process exits.
    CLOSE_TIMEOUT = 3.0
    #: Seconds between two warnings about stalls caused by the same slot.
    WARN_EVERY = 10.0

    def __init__(
        self, kernel: Kernel = SYSTEM, warn_after: float = defaults.EVENT_LOOP_LAG_WARNING
    ) -> None:
        self._kernel = kernel
        self._monotonic = kernel.monotonic
        self.warn_after = warn_after
        self._mutex = kernel.lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[ThreadLike] = []
        self._thread_id: int | None = None
        self._closing = kernel.event()
        self._closed = False
        self._slots: dict[Slot, None] = {}
        # Helper threads for blocking calls: started on demand, idle ones reserved per call.
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None]
        self._calls = queue.SimpleQueue()
        self._helpers = 0
        self._idle = 0
        # Lag: the last measurement, the largest per half window, stalls and the last one.
        self._beat_at = 0.0
        self.lag = 0.0
        self._halves = [0.0, 0.0]  # largest lag of the previous and the current half window
        self._half_began = 0.0
        self.stalls = 0
        self.last_stall: dict[str, Any] | None = None
        self._suspect: Suspect | None = None
        self._suspect_for = -1.0  # the beat the suspect was seen in
        self._reported_for = -1.0  # the beat whose stall was reported while it lasted
        self._warned: dict[str | None, tuple[float, int]] = {}  # culprit -> last log, unlogged

    # -- running coroutines ------------------------------------------------------------------

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._mutex:
            if self._closed:
                raise RuntimeError("the asyncio event loop of this process has been closed")
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._beat_at = self._half_began = self._monotonic()
                self._threads = [
                    self._kernel.thread(self._run, "pb-asyncio"),
                    self._kernel.thread(self._watch, "pb-asyncio-watchdog"),
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
            start = not self._idle and self._helpers < self.MAX_HELPERS
            if self._idle:
                self._idle -= 1
            elif start:
                self._helpers += 1
            number = self._helpers
        self._calls.put((call, future))
        if start:
            self._kernel.thread(self._helper, f"pb-asyncio-call-{number}").start()
        return await future

    def _helper(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            call, future = item
            try:
                result = call()
            except BaseException as exc:
                self.call_soon(_settle, future, None, exc)
            else:
                self.call_soon(_settle, future, result, None)
            with self._mutex:
                self._idle += 1

    # -- the slots, for naming the one that blocks -------------------------------------------

    def register(self, slot: Slot) -> None:
        with self._mutex:
            self._slots[slot] = None

    def unregister(self, slot: Slot) -> None:
        with self._mutex:
            self._slots.pop(slot, None)

    # -- the loop's thread -------------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        self._thread_id = threading.get_ident()
        asyncio.set_event_loop(loop)
        beat = loop.create_task(self._beat(), name="pb-event-loop-lag")
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

    # -- lag ---------------------------------------------------------------------------------

    async def _beat(self) -> None:
        while True:
            before = self._monotonic()
            self._beat_at = before
            await asyncio.sleep(self.INTERVAL)
            self._measured(max(0.0, self._monotonic() - before - self.INTERVAL), before)

    def _measured(self, lag: float, beat: float) -> None:
        now = self._monotonic()
        half = self.WINDOW / 2
        if now - self._half_began >= half:
            older = self._halves[1] if now - self._half_began < self.WINDOW else 0.0
            self._halves = [older, 0.0]
            self._half_began = now
        self._halves[1] = max(self._halves[1], lag)
        self.lag = lag
        if lag < self.warn_after:
            return
        self.stalls += 1
        suspect = self._suspect if self._suspect_for == beat else None
        self.last_stall = {
            "seconds": round(lag, 3),
            "slot": suspect.label if suspect is not None else None,
            "where": suspect.where if suspect is not None else None,
            "at": self._kernel.time(),
        }
        if self._reported_for == beat:
            logger.info("the asyncio workers' event loop runs again after %.2fs", lag)
        else:
            self._warn(suspect, "was blocked for %.2fs", lag)

    def recent_lag(self) -> float:
        """The largest lag of the last :attr:`WINDOW` seconds, a stall going on included."""
        if self._loop is None:
            return 0.0
        now = self._monotonic()
        age = now - self._half_began
        previous, current = self._halves
        recent = max(previous, current) if age < self.WINDOW / 2 else current
        if age >= self.WINDOW:
            recent = 0.0
        ongoing = now - self._beat_at - self.INTERVAL
        return max(recent, ongoing, 0.0)

    def _watch(self) -> None:
        while not self._closing.wait(self.WATCH_TICK):
            beat = self._beat_at
            late = self._monotonic() - beat - self.INTERVAL
            if late < self.WATCH_TICK:
                continue
            if self._suspect_for != beat or self._suspect is None:
                self._suspect = self._blame()
                self._suspect_for = beat
            if late >= self.warn_after and self._reported_for != beat:
                self._reported_for = beat
                self._warn(self._suspect, "has been blocked for %.2fs", late)

    def _warn(self, suspect: Suspect | None, what: str, seconds: float) -> None:
        """Log a stall, at most once per :attr:`WARN_EVERY` seconds for each culprit (a job
        that blocks in every record would otherwise log several lines a second)."""
        key = suspect.label if suspect is not None else None
        now = self._monotonic()
        last, unlogged = self._warned.get(key, (-math.inf, 0))
        if now - last < self.WARN_EVERY:
            self._warned[key] = (last, unlogged + 1)
            return
        self._warned[key] = (now, 0)
        more = f" ({unlogged} more stall(s) of it since the last report)" if unlogged else ""
        logger.warning(
            "the asyncio workers' event loop %s by %s%s: every asyncio slot of this process "
            "waits meanwhile; await the blocking call or run it with asyncio.to_thread",
            what % seconds,
            _name(suspect),
            more,
        )

    def _blame(self) -> Suspect | None:
        """The slot whose code runs on the loop now, and the line it is at."""
        with self._mutex:
            slots = list(self._slots)
        frame = sys._current_frames().get(self._thread_id or -1)
        for slot in slots:
            if slot.running_on_loop():
                return Suspect(slot.label, _where(frame, slot.source))
        if frame is None:
            return None
        return Suspect("code outside the runner's slots", _where(frame, None))

    def describe(self) -> dict[str, Any]:
        """The loop's part of the process's heartbeat info (nothing before it started)."""
        if self._loop is None:
            return {}
        with self._mutex:
            slots = len(self._slots)
        return {
            "event_loop": {
                "lag": round(self.recent_lag(), 4),
                "stalls": self.stalls,
                "slots": slots,
                "warn_after": self.warn_after,
                "last_stall": self.last_stall,
            }
        }


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _name(suspect: Suspect | None) -> str:
    if suspect is None:
        return "code that could not be named (it had returned before the watchdog looked)"
    return f"{suspect.label} (at {suspect.where})"


def _where(frame: Any, source: str | None) -> str:
    """``file:line in function`` of the innermost frame in ``source`` (the job's file), else
    of the innermost frame."""
    innermost = frame
    while frame is not None:
        if source is not None and frame.f_code.co_filename == source:
            break
        frame = frame.f_back
    found = frame if frame is not None else innermost
    if found is None:
        return "an unknown line"
    return f"{found.f_code.co_filename}:{found.f_lineno} in {found.f_code.co_name}"
