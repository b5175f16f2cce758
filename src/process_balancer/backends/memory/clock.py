"""A hand-moved clock for the in-memory store."""

from __future__ import annotations

import threading
import time

__all__ = ["ManualClock"]


class ManualClock:
    """A clock that moves only when told to, for tests: pass it as ``clock=`` and expire
    memberships and locks with :meth:`advance` instead of sleeping.

    A Manager heartbeating on it compares it with its own monotonic clock, as it does a
    server's: moved more than 0.5 s (the clock watch's tolerance) past the time that really
    passed between two heartbeats, it is a forward step and begins a new incarnation; standing
    still longer than that is a backward step, which is only logged.
    """

    def __init__(self, start: float | None = None) -> None:
        """Start at ``start``, else at the wall clock's time, so that times read off it
        (``snapshot().now``, deadlines) compare sensibly with ``time.time()``."""
        self._now = time.time() if start is None else float(start)
        self._mutex = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock ``seconds`` forward (backward if negative); returns the new time."""
        with self._mutex:
            self._now += seconds
            return self._now

    def set(self, now: float) -> None:
        """Put the clock at ``now`` (seconds since the epoch)."""
        with self._mutex:
            self._now = float(now)
