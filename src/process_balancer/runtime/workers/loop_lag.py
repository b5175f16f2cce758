"""How late the asyncio workers' event loop runs, and which slot made it late.

A coroutine on the loop (:meth:`LagMonitor.beat`) wakes every :attr:`LagMonitor.INTERVAL`
seconds and measures how late it woke: that lateness is the loop's *lag*, the time every
slot on it waited because something did not yield. A watchdog thread
(:meth:`LagMonitor.watch`) looks at the loop while a stall lasts and names the slot whose code
is running on it, and the line in the job, so a blocking call (``time.sleep``, a synchronous
client) is reported with the slot to fix.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from dataclasses import dataclass
from typing import Any, Protocol

from ...config import defaults
from ..kernel import SYSTEM, EventLike, Kernel

logger = logging.getLogger(__name__)


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


class LagMonitor:
    """The lag of one event loop: measured, kept for the last :attr:`WINDOW` seconds, and
    reported when it passes ``warn_after`` (a *stall*)."""

    #: Seconds between two wake-ups of the measuring coroutine.
    INTERVAL = 0.1
    #: Seconds between two looks of the watchdog at the loop.
    WATCH_TICK = 0.05
    #: The lag reported is the largest of the last WINDOW seconds (two half windows).
    WINDOW = 10.0
    #: Seconds between two warnings about stalls caused by the same slot.
    WARN_EVERY = 10.0

    def __init__(
        self, kernel: Kernel = SYSTEM, warn_after: float = defaults.EVENT_LOOP_LAG_WARNING
    ) -> None:
        self._kernel = kernel
        self._monotonic = kernel.monotonic
        self.warn_after = warn_after
        self._mutex = kernel.lock()
        self._slots: dict[Slot, None] = {}
        #: The loop's thread, whose stack points at the line that blocks it.
        self.thread_id: int | None = None
        self._started = False
        self._beat_at = 0.0
        self.lag = 0.0  # the last measurement
        self._halves = [0.0, 0.0]  # largest lag of the previous and the current half window
        self._half_began = 0.0
        self.stalls = 0
        self.last_stall: dict[str, Any] | None = None
        self._suspect: Suspect | None = None
        self._suspect_for = -1.0  # the beat the suspect was seen in
        self._reported_for = -1.0  # the beat whose stall was reported while it lasted
        self._warned: dict[str | None, tuple[float, int]] = {}  # culprit -> last log, unlogged

    def register(self, slot: Slot) -> None:
        with self._mutex:
            self._slots[slot] = None

    def unregister(self, slot: Slot) -> None:
        with self._mutex:
            self._slots.pop(slot, None)

    def slots(self) -> int:
        with self._mutex:
            return len(self._slots)

    # -- measuring, on the loop ------------------------------------------------------------

    def start(self) -> None:
        """The loop is about to run: measuring starts now."""
        self._beat_at = self._half_began = self._monotonic()
        self._started = True

    async def beat(self) -> None:
        while True:
            before = self._monotonic()
            self._beat_at = before
            await asyncio.sleep(self.INTERVAL)
            self._measured(max(0.0, self._monotonic() - before - self.INTERVAL), before)

    def _measured(self, lag: float, beat: float) -> None:
        now = self._monotonic()
        if now - self._half_began >= self.WINDOW / 2:
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
        if not self._started:
            return 0.0
        now = self._monotonic()
        age = now - self._half_began
        previous, current = self._halves
        recent = max(previous, current) if age < self.WINDOW / 2 else current
        if age >= self.WINDOW:
            recent = 0.0
        ongoing = now - self._beat_at - self.INTERVAL
        return max(recent, ongoing, 0.0)

    # -- watching, on a thread of its own ----------------------------------------------------

    def watch(self, closing: EventLike) -> None:
        """Name the slot blocking the loop while it does, until ``closing`` is set."""
        while not closing.wait(self.WATCH_TICK):
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
        frame = sys._current_frames().get(self.thread_id or -1)
        for slot in slots:
            if slot.running_on_loop():
                return Suspect(slot.label, _where(frame, slot.source))
        if frame is None:
            return None
        return Suspect("code outside the runner's slots", _where(frame, None))

    def describe(self) -> dict[str, Any]:
        return {
            "lag": round(self.recent_lag(), 4),
            "stalls": self.stalls,
            "slots": self.slots(),
            "warn_after": self.warn_after,
            "last_stall": self.last_stall,
        }


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
