"""The rules that keep a slot single when the membership may have lapsed, the backend forgot
the group or its clock jumped: each is checked on the real code, in-process, against the
the in-memory backend (the heartbeat) and with plug-in lock drivers (the keeper)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from process_balancer.backends import BackendError
from process_balancer.backends.memory import MemoryBackend
from process_balancer.config.schema import settings_from
from process_balancer.locks import LockContext, LockDriver
from process_balancer.runtime.clock_watch import ServerClockWatch
from process_balancer.runtime.leases import Lease, LeaseKeeper, Membership
from process_balancer.runtime.manager import Manager


class Quiet(LockDriver):
    """A lock that is always ours; release fails while ``failures`` is positive."""

    def __init__(self, context: LockContext, failures: int = 0) -> None:
        super().__init__(context)
        self.failures = failures
        self.released = threading.Event()
        self.closed = False

    def try_acquire(self) -> int | None:
        return 1

    def renew(self) -> bool:
        return True

    def release(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise BackendError("no answer")
        self.released.set()

    def close(self) -> None:
        self.closed = True


def driver(ttl: float = 30.0, failures: int = 0) -> Quiet:
    return Quiet(LockContext(None, "ns", "j", 0, "me", ttl), failures)  # type: ignore[arg-type]


# -- the server clock --------------------------------------------------------------------------


def test_a_server_clock_that_advances_with_the_local_one_is_no_step() -> None:
    watch = ServerClockWatch()
    assert watch.observe(1000.0, 0.0, 0.01) == 0.0
    assert watch.observe(1001.0, 1.0, 1.01) == 0.0
    # A slow answer (the server ran it late) is no step either.
    assert watch.observe(1009.0, 2.0, 9.5) == 0.0


def test_a_forward_step_of_the_server_clock_is_seen_beyond_the_tolerance() -> None:
    watch = ServerClockWatch()
    watch.observe(1000.0, 0.0, 0.01)
    assert watch.observe(1021.0, 1.0, 1.01) == pytest.approx(20.0, abs=0.05)


def test_a_backward_step_is_reported_as_negative() -> None:
    watch = ServerClockWatch()
    watch.observe(1000.0, 0.0, 0.01)
    assert watch.observe(990.0, 1.0, 1.01) == pytest.approx(-11.0, abs=0.05)


def test_the_local_wall_clock_plays_no_part() -> None:
    """Only the backend's time and the local monotonic clock are compared: a process whose
    own wall clock is off by any amount sees no step."""
    watch = ServerClockWatch()
    watch.observe(1000.0, 50.0, 50.01)
    assert watch.observe(1001.0, 51.0, 51.01) == 0.0


# -- the lease keeper --------------------------------------------------------------------------


def test_revoke_all_cuts_every_lease_and_later_attempts_are_born_lost() -> None:
    membership = Membership()
    membership.extend(time.monotonic(), 30)
    keeper = LeaseKeeper(membership, lambda lease: None)
    epoch = keeper.epoch
    leases = [keeper.hold(driver(), 1, time.monotonic()) for _ in range(3)]
    assert keeper.revoke_all("membership lapsed") == 3
    assert all(lease.lost and lease.lost_reason == "membership lapsed" for lease in leases)
    # An attempt that started before the revocation and succeeded after it is not trusted.
    late = keeper.hold(driver(), 2, time.monotonic(), epoch=epoch)
    assert late.lost
    fresh = keeper.hold(driver(), 3, time.monotonic(), epoch=keeper.epoch)
    assert not fresh.lost


def test_every_holder_is_cut_before_anything_is_logged() -> None:
    """Logging may block (a full pipe); no holder may wait for it to be cut off."""
    membership = Membership()
    membership.extend(time.monotonic(), 1.0)
    seen: list[list[bool]] = []
    leases: list[Lease] = []
    keeper = LeaseKeeper(membership, lambda lease: seen.append([x.lost for x in leases]))
    now = time.monotonic()
    leases.extend(keeper.hold(driver(), i, now) for i in range(4))
    keeper.check(membership.valid_until)
    assert len(seen) == 4
    assert all(all(state) for state in seen)


def test_a_failed_release_is_retried_in_the_background() -> None:
    membership = Membership()
    membership.extend(time.monotonic(), 30)
    keeper = LeaseKeeper(membership, lambda lease: None)
    keeper.RELEASE_RETRY = 0.05
    keeper.start()
    try:
        lock = driver(failures=2)
        lease = keeper.hold(lock, 1, time.monotonic())
        keeper.drop(lease)
        with pytest.raises(BackendError):
            lock.release()
        keeper.release_later(lease)
        assert lock.released.wait(3), "the release was not retried"
        deadline = time.monotonic() + 2
        while keeper.pending_releases() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert keeper.pending_releases() == 0 and lock.closed
    finally:
        keeper.stop()


def test_a_late_answer_about_an_old_lease_does_not_cut_the_next_iteration() -> None:
    from process_balancer.runtime.workers.thread import ThreadWorker

    worker = ThreadWorker.__new__(ThreadWorker)
    worker._cut = False
    membership = Membership()
    membership.extend(time.monotonic(), 30)
    keeper = LeaseKeeper(membership, lambda lease: None)
    old = keeper.hold(driver(), 1, time.monotonic(), worker._lease_lost)
    current = keeper.hold(driver(), 2, time.monotonic(), worker._lease_lost)
    worker._lease = current
    keeper._cut([old], "another process holds it now")  # the renewal answer of an old lease
    assert old.lost and not worker._cut
    keeper._cut([current], "another process holds it now")
    assert worker._cut


# -- the manager's heartbeat -------------------------------------------------------------------


@pytest.fixture
def manager(namespace: str) -> Iterator[Manager]:
    url = f"memory://{namespace}"
    settings = settings_from(backend=url, namespace=namespace)
    m = Manager(settings, {}, MemoryBackend(url, namespace), handle_signals=False)
    yield m
    m.backend.close()


def test_a_heartbeat_sent_after_the_membership_lapsed_cuts_every_lease_first(
    manager: Manager,
) -> None:
    manager._beat()
    lease = manager.keeper.hold(driver(), 1, time.monotonic())
    # The process was paused past its deadline: its membership may have expired.
    manager.membership.valid_until = time.monotonic() - 0.01
    manager._beat()
    assert lease.lost
    assert "too late" in lease.lost_reason or "expired" in lease.lost_reason
    assert manager.membership.valid_until > time.monotonic()


def test_a_heartbeat_in_time_cuts_nothing(manager: Manager) -> None:
    manager._beat()
    lease = manager.keeper.hold(driver(), 1, time.monotonic())
    manager._beat()
    assert not lease.lost


def test_a_rejoin_reported_by_the_backend_cuts_every_lease(manager: Manager) -> None:
    manager._beat()
    lease = manager.keeper.hold(driver(), 1, time.monotonic())
    manager.backend.leave(manager.identity)  # a peer pruned it while it was cut off
    manager._beat()
    assert lease.lost and "expired" in lease.lost_reason


def test_a_new_incarnation_cuts_every_lease(manager: Manager) -> None:
    manager._beat()
    first = manager.incarnation
    lease = manager.keeper.hold(driver(), 1, time.monotonic())
    manager.backend.reset_incarnation(first, 0.1)
    manager._beat()
    assert lease.lost and "lost or replaced" in lease.lost_reason
    assert manager.incarnation != first


def test_a_forward_jump_of_the_backend_clock_begins_a_new_incarnation(
    manager: Manager,
) -> None:
    manager._beat()
    first = manager.incarnation
    lease = manager.keeper.hold(driver(), 1, time.monotonic())
    # As if the server's clock had been 20 s behind at the previous heartbeat.
    last = manager._clock._last
    assert last is not None
    manager._clock._last = type(last)(last.server_time - 20, last.sent_at, last.received_at)
    manager._beat()
    assert lease.lost and "clock jumped" in lease.lost_reason
    assert manager.incarnation != first
