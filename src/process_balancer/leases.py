"""Held worker locks, kept alive in the background and bounded by the process's membership."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .backends.base import BackendError
from .locks.base import LockDriver

logger = logging.getLogger(__name__)


class Membership:
    """How long this process's own membership is certainly still valid (monotonic clock).

    A peer may take over this process's worker locks once its membership has expired on the
    backend's clock. The deadline here is measured from *before* the heartbeat was sent, so it
    always falls before the backend's: a process stops its iterations before anyone else may
    start them, even when it is paused or cut off from the backend.
    """

    def __init__(self) -> None:
        self.valid_until = 0.0

    def extend(self, sent_at: float, expiry: float) -> None:
        self.valid_until = max(self.valid_until, sent_at + expiry)

    def revoke(self) -> None:
        self.valid_until = 0.0


@dataclass(eq=False)
class Lease:
    """One held worker lock."""

    driver: LockDriver
    fence: int
    lock_until: float  # monotonic: the lock itself certainly lives until then
    next_renew: float
    deadline: float = 0.0  # min(lock_until, membership): the worker stops at this time
    lost: bool = False
    lost_reason: str = ""
    renew_lock: threading.Lock = field(default_factory=threading.Lock)

    def valid(self) -> bool:
        return not self.lost and time.monotonic() < self.deadline


class LeaseKeeper:
    """Renews every held lock before its TTL runs out, in one background thread per process.

    Renewing on a timer instead of after every record keeps the per-record cost of the
    framework to a flag check and a clock read, whatever the record rate.
    """

    TICK = 0.1

    def __init__(self, membership: Membership, on_lost: Callable[[Lease], None]) -> None:
        self._membership = membership
        self._on_lost = on_lost
        self._leases: set[Lease] = set()
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pb-lease-keeper", daemon=True)

    def membership_valid(self) -> bool:
        return time.monotonic() < self._membership.valid_until

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def hold(self, driver: LockDriver, fence: int, acquired_at: float) -> Lease:
        ttl = driver.ttl
        interval = driver.renew_interval
        lock_until = math.inf if ttl is None else acquired_at + ttl
        next_renew = math.inf if interval is None else acquired_at + interval
        lease = Lease(driver=driver, fence=fence, lock_until=lock_until, next_renew=next_renew)
        lease.deadline = min(lock_until, self._membership.valid_until)
        with self._mutex:
            self._leases.add(lease)
        return lease

    def drop(self, lease: Lease) -> None:
        with self._mutex:
            self._leases.discard(lease)

    def refresh(self) -> None:
        """Recompute every deadline (after the membership deadline moved)."""
        with self._mutex:
            leases = list(self._leases)
        valid_until = self._membership.valid_until
        for lease in leases:
            lease.deadline = min(lease.lock_until, valid_until)

    def _run(self) -> None:
        while not self._stop.wait(self.TICK):
            now = time.monotonic()
            with self._mutex:
                leases = list(self._leases)
            valid_until = self._membership.valid_until
            for lease in leases:
                if lease.lost:
                    continue
                if now >= lease.next_renew:
                    self._renew(lease)
                lease.deadline = min(lease.lock_until, valid_until)
                if now >= lease.deadline and not lease.lost:
                    why = (
                        "membership could not be renewed in time"
                        if valid_until <= lease.lock_until
                        else "renewals failed until the lock expired"
                    )
                    self._mark_lost(lease, why)

    def _renew(self, lease: Lease) -> None:
        sent_at = time.monotonic()
        try:
            with lease.renew_lock:
                still_ours = lease.driver.renew()
        except BackendError as exc:
            logger.warning(
                "could not renew worker lock %s (%s); retrying, it is lost in %.1fs",
                lease.driver.context.name,
                exc,
                max(0.0, lease.lock_until - sent_at),
            )
            lease.next_renew = sent_at + min(1.0, (lease.driver.renew_interval or 1.0) / 2)
            return
        if not still_ours:
            self._mark_lost(lease, "another process holds it now")
            return
        ttl = lease.driver.ttl
        interval = lease.driver.renew_interval
        lease.lock_until = math.inf if ttl is None else sent_at + ttl
        lease.next_renew = math.inf if interval is None else sent_at + interval

    def _mark_lost(self, lease: Lease, why: str) -> None:
        lease.lost = True
        lease.lost_reason = why
        lease.deadline = 0.0
        self._on_lost(lease)
