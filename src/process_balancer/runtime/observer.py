"""How operations code (metrics, probes) watches a running process without reaching into it.

The manager calls every :class:`Observer` it was given at start, after each successful
heartbeat, after each iteration and at the end; observers read the process through the
read-only :class:`ProcessView` the manager implements. Nothing in ``runtime`` imports an
observer, so adding one (a tracer, a StatsD reporter) touches no runtime code.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..config.schema import Settings
    from .leases import Membership
    from .supervisor import Supervisor


class ProcessView(Protocol):
    """What an observer may read of a running process."""

    identity: str
    settings: Settings
    backend: Backend
    membership: Membership
    supervisor: Supervisor

    @property
    def job_ids(self) -> Collection[str]: ...

    @property
    def joined(self) -> bool: ...

    @property
    def quiet(self) -> bool: ...

    @property
    def stopping(self) -> bool: ...


class Observer(Protocol):
    """Told what a process does; every method must return quickly and never raise."""

    def start(self) -> None:
        """The process is about to join its group (an observer may start serving here)."""

    def observe_heartbeat(self, seconds: float) -> None:
        """A heartbeat succeeded after ``seconds`` of round trip."""

    def observe_iteration(self, job_id: str, seconds: float) -> None:
        """An iteration of ``job_id`` that held its worker lock took ``seconds``."""

    def close(self) -> None:
        """The process has left its group (or is exiting)."""
