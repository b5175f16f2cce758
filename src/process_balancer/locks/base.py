"""The worker lock interface: one lock per (namespace, job_id, worker_index)."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..backends.base import Backend, Gate


@dataclass(frozen=True)
class LockContext:
    """What a lock driver is built from."""

    backend: Backend
    namespace: str
    job_id: str
    worker_index: int
    holder: str  # identity of the process taking the lock
    ttl: float  # seconds the lock lives without renewal (runtime_lock_timeout)
    options: Mapping[str, Any] = field(default_factory=dict)  # the job's config entry
    #: seconds past a holder's deadline before another process may take the lock over
    #: (the job's ``takeover_grace``): a holder that is cut off ends its record meanwhile
    grace: float = 0.0

    @property
    def name(self) -> str:
        """The lock's name inside the namespace: ``<job_id>:<worker_index>``."""
        return f"{self.job_id}:{self.worker_index}"


class LockDriver(abc.ABC):
    """Guards one worker slot so that it runs on one process at a time.

    The runner calls :meth:`acquire` before each iteration, :meth:`renew` in the background
    every ``renew_interval`` seconds while the iteration runs, and :meth:`release` after
    ``unlock_records``. When :meth:`renew` returns False, or has not succeeded for ``ttl``
    seconds, the lock counts as lost: the iteration stops at the next record boundary.

    Implementations must make renew and release touch only their own lock (compare a token
    atomically), and should make :meth:`acquire` return a fencing token that strictly
    increases with each acquisition of the same slot.
    """

    #: Seconds the lock survives without a renewal; None if it never expires on its own.
    ttl: float | None
    #: The driver takes and renews its lock under :attr:`gate` (a partitioned job's
    #: generation, see :class:`~process_balancer.backends.Gate`); a job with
    #: ``partitioned: true`` needs such a driver.
    supports_gate: ClassVar[bool] = False

    def __init__(self, context: LockContext) -> None:
        self.context = context
        self.ttl = context.ttl
        #: Set by the runner before each attempt for a partitioned job (None otherwise).
        self.gate: Gate | None = None

    @property
    def renew_interval(self) -> float | None:
        """Seconds between background renewals; None means no renewal is needed."""
        return None if self.ttl is None else self.ttl / 3

    @abc.abstractmethod
    def try_acquire(self) -> int | None:
        """One attempt: return the fencing token (an int) if the lock was taken, else None."""

    @abc.abstractmethod
    def renew(self) -> bool:
        """Extend the lock; False when it is no longer ours."""

    @abc.abstractmethod
    def release(self) -> None:
        """Give the lock up if it is still ours; never touch another holder's lock."""

    def wait_hint(self) -> str | None:
        """A backend event name that signals the lock may have become free, if any."""
        return None

    def close(self) -> None:
        """Free what this driver instance holds (a connection, say); called when the runner
        is done with it, after :meth:`release` or after giving up on :meth:`try_acquire`."""
        return None

    @classmethod
    def check(cls, job_id: str, options: Mapping[str, Any], backend: Backend) -> None:
        """Called once at start-up for every job using this driver: raise ValueError, naming
        the job and what to fix, when the driver cannot work with this configuration."""
        return None
