"""Held worker locks, kept alive in the background and bounded by the process's membership."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ..backends.base import BackendError
from ..locks.base import LockDriver
from .kernel import SYSTEM, Kernel, LockLike

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

    def may_have_lapsed(self, sent_at: float, margin: float) -> bool:
        """A heartbeat sent at ``sent_at`` may reach the backend after the membership
        expired there (the holders were due to be cut off ``margin`` before it)."""
        return sent_at >= self.valid_until - margin

    def revoke(self) -> None:
        self.valid_until = 0.0


@dataclass(eq=False)
class Lease:
    """One held worker lock."""

    driver: LockDriver
    fence: int
    lock_until: float  # monotonic: the lock itself certainly lives until then
    next_renew: float
    margin: float  # the holder is cut off this long before ``deadline``
    on_lost: Callable[[Lease], None] | None = None
    deadline: float = 0.0  # min(lock_until, membership valid_until)
    lost: bool = False
    lost_reason: str = ""
    #: Held by whoever renews or releases the lock, so the two never cross.
    renew_lock: LockLike = field(default_factory=SYSTEM.lock)
    monotonic: Callable[[], float] = SYSTEM.monotonic

    def remaining(self) -> float:
        """Seconds before the holder is cut off unless the lock and the membership are
        renewed in time; 0 once it has been cut off."""
        if self.lost:
            return 0.0
        return max(0.0, self.deadline - self.margin - self.monotonic())


class LeaseKeeper:
    """Keeps held worker locks alive and cuts their holders off before they could expire.

    Two background threads per process. The *renewer* renews each lock every
    ``renew_interval``; its calls may block on the network. The *watcher* never does I/O: it
    recomputes each lease's deadline from the lock's last renewal and the process's
    membership, and cuts the holder off ``margin`` before it. The worker only reads one flag
    per record, which keeps the framework's per-record cost close to a bare loop; a holder
    that wakes from a pause (SIGSTOP, a long GC) runs at most until the watcher gets the GIL
    back, a few milliseconds, and fencing tokens cover that window.
    """

    WATCH_TICK = 0.05
    RENEW_TICK = 0.1
    MARGIN = 0.2

    #: Seconds between two attempts to release a lock whose release failed.
    RELEASE_RETRY = 0.5

    def __init__(
        self,
        membership: Membership,
        on_lost: Callable[[Lease], None],
        *,
        kernel: Kernel = SYSTEM,
    ) -> None:
        self._membership = membership
        self._on_lost = on_lost
        self._kernel = kernel
        self._monotonic = kernel.monotonic
        # Insertion-ordered (a dict, not a set), so leases are renewed and cut in the order
        # they were taken, the same in every run.
        self._leases: dict[Lease, None] = {}
        #: Leases whose release failed (the backend did not answer): retried in the background
        #: until they succeed or the lock has expired by itself, so a slot is not stranded for
        #: the lock's TTL.
        self._releases: list[tuple[Lease, float, float]] = []  # lease, give up at, next try
        #: Bumped by :meth:`revoke_all`; a lock taken with an attempt started before a bump
        #: is born lost, since its attempt may predate a lapse of the membership.
        self.epoch = 0
        self._mutex = kernel.lock()
        self._stop = kernel.event()
        self._threads = [
            kernel.thread(self._watch, "pb-lease-watcher"),
            kernel.thread(self._renew_loop, "pb-lease-renewer"),
        ]

    def membership_valid(self) -> bool:
        return self._monotonic() < self._membership.valid_until

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=5)

    def hold(
        self,
        driver: LockDriver,
        fence: int,
        acquired_at: float,
        on_lost: Callable[[Lease], None] | None = None,
        *,
        epoch: int | None = None,
    ) -> Lease:
        ttl = driver.ttl
        interval = driver.renew_interval
        lock_until = math.inf if ttl is None else acquired_at + ttl
        next_renew = math.inf if interval is None else acquired_at + interval
        margin = self.MARGIN if ttl is None else min(self.MARGIN, ttl / 5)
        lease = Lease(
            driver=driver,
            fence=fence,
            lock_until=lock_until,
            next_renew=next_renew,
            margin=margin,
            on_lost=on_lost,
            renew_lock=self._kernel.lock(),
            monotonic=self._monotonic,
        )
        lease.deadline = min(lock_until, self._membership.valid_until)
        with self._mutex:
            self._leases[lease] = None
            stale = epoch is not None and epoch != self.epoch
        if stale:
            self._cut([lease], "the membership lapsed while the lock was being taken")
        return lease

    def revoke_all(self, why: str) -> int:
        """Cut every held lease at once (the membership may have lapsed, or the backend's
        state was lost); returns how many were cut. Their workers stop at the next record
        boundary and take their locks afresh."""
        with self._mutex:
            self.epoch += 1
            leases = [lease for lease in self._leases if not lease.lost]
        self._cut(leases, why)
        return len(leases)

    def drop(self, lease: Lease) -> None:
        with self._mutex:
            self._leases.pop(lease, None)

    def refresh(self) -> None:
        """Recompute every deadline (after the membership deadline moved)."""
        valid_until = self._membership.valid_until
        for lease in self._held():
            lease.deadline = min(lease.lock_until, valid_until)

    def _held(self) -> list[Lease]:
        with self._mutex:
            return list(self._leases)

    def _watch(self) -> None:
        while not self._stop.wait(self.WATCH_TICK):
            try:
                self.check(self._monotonic())
            except Exception:  # the watcher must never die: it is what cuts holders off
                logger.exception("lease watcher: unexpected error; continuing")

    def check(self, now: float) -> None:
        """Cut off every holder whose lease is within its margin of the deadline."""
        valid_until = self._membership.valid_until
        by_membership: list[Lease] = []
        by_lock: list[Lease] = []
        for lease in self._held():
            if lease.lost:
                continue
            lease.deadline = min(lease.lock_until, valid_until)
            if now >= lease.deadline - lease.margin:
                (by_membership if valid_until <= lease.lock_until else by_lock).append(lease)
        # Every holder is cut before anything is logged: logging may block (a full pipe).
        self._cut(by_membership, "the process's membership could not be renewed in time")
        self._cut(by_lock, "renewals failed until the lock was about to expire")

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.RENEW_TICK):
            now = self._monotonic()
            self._retry_releases(now)
            for lease in self._held():
                if not lease.lost and now >= lease.next_renew:
                    try:
                        self._renew(lease)
                    except Exception:
                        logger.exception(
                            "renewing worker lock %s failed unexpectedly; retrying",
                            lease.driver.context.name,
                        )

    def _renew(self, lease: Lease) -> None:
        sent_at = self._monotonic()
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
            self._cut([lease], "another process holds it now")
            return
        ttl = lease.driver.ttl
        interval = lease.driver.renew_interval
        lease.lock_until = math.inf if ttl is None else sent_at + ttl
        lease.next_renew = math.inf if interval is None else sent_at + interval

    def _cut(self, leases: list[Lease], why: str) -> None:
        """Mark ``leases`` lost and tell their workers, then log (never the other way)."""
        cut = []
        for lease in leases:
            with self._mutex:
                if lease.lost:
                    continue
                lease.lost = True
                lease.lost_reason = why
            if lease.on_lost is not None:
                lease.on_lost(lease)
            cut.append(lease)
        for lease in cut:
            self._on_lost(lease)

    # -- releases that failed ------------------------------------------------------------------

    def release_later(self, lease: Lease) -> None:
        """Retry the release of ``lease`` in the background (its last attempt failed)."""
        ttl = lease.driver.ttl
        now = self._monotonic()
        give_up = now + (60.0 if ttl is None else ttl)
        with self._mutex:
            self._releases.append((lease, give_up, now + self.RELEASE_RETRY))

    def pending_releases(self) -> int:
        with self._mutex:
            return len(self._releases)

    def _retry_releases(self, now: float) -> None:
        with self._mutex:
            due = [entry for entry in self._releases if entry[2] <= now]
            self._releases = [entry for entry in self._releases if entry[2] > now]
        for lease, give_up, _ in due:
            name = lease.driver.context.name
            try:
                with lease.renew_lock:
                    lease.driver.release()
            except BackendError as exc:
                if now < give_up:
                    with self._mutex:
                        self._releases.append((lease, give_up, now + self.RELEASE_RETRY))
                    continue
                logger.warning(
                    "could not release worker lock %s (%s); it expires by itself", name, exc
                )
            except Exception:
                logger.exception("releasing worker lock %s failed; it expires by itself", name)
            else:
                logger.info("worker lock %s released after a retry", name)
            lease.driver.close()
