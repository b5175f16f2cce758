"""Noticing that the backend's clock jumped, from heartbeat answers and the local monotonic
clock.

Membership deadlines and lock expiries live on the backend's clock (Redis ``TIME``,
PostgreSQL ``clock_timestamp()``, the host's clock for SQLite). When that clock steps forward,
every deadline falls due early there, while each process still counts its own membership on
its monotonic clock: peers could take slots over from holders that are still running. The
process's own wall clock is never used for this.

Between two heartbeats the backend's clock must advance by about as much as the local
monotonic clock: at least the time from the first answer to the second request, at most the
time from the first request to the second answer. More than the upper bound (plus a
tolerance) is a forward step; less than the lower bound is a backward step.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Seconds of disagreement tolerated before a step is reported: well above scheduling noise,
#: below ``takeover_grace`` plus the cut-off margin, so a smaller step does no harm.
TOLERANCE = 0.5


@dataclass(frozen=True)
class _Beat:
    server_time: float
    sent_at: float
    received_at: float


class ServerClockWatch:
    """Compares successive heartbeat answers' server times with the local monotonic clock."""

    def __init__(self, tolerance: float = TOLERANCE) -> None:
        self.tolerance = tolerance
        self._last: _Beat | None = None

    def observe(self, server_time: float | None, sent_at: float, received_at: float) -> float:
        """Record one heartbeat; return the step seen since the previous one (positive:
        forward, negative: backward) or 0.0 when the clocks agree within the tolerance."""
        if server_time is None:
            return 0.0
        last, self._last = self._last, _Beat(server_time, sent_at, received_at)
        if last is None:
            return 0.0
        advanced = server_time - last.server_time
        most = received_at - last.sent_at
        least = sent_at - last.received_at
        if advanced > most + self.tolerance:
            return advanced - most
        if advanced < least - self.tolerance:
            return advanced - least
        return 0.0

    def forget(self) -> None:
        """Start afresh (the backend's state began a new incarnation)."""
        self._last = None
