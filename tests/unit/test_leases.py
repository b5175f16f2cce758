"""The lease keeper: background renewal, and holders cut off before their lock could expire."""

from __future__ import annotations

import time

from process_balancer.locks import LockContext, LockDriver
from process_balancer.runtime.leases import LeaseKeeper, Membership


class CountingLock(LockDriver):
    """A lock driver of the plug-in interface that only counts and answers as told."""

    def __init__(self, context: LockContext, *, still_ours: bool = True) -> None:
        super().__init__(context)
        self.renewals = 0
        self.still_ours = still_ours

    def try_acquire(self) -> int | None:
        return 1

    def renew(self) -> bool:
        self.renewals += 1
        return self.still_ours

    def release(self) -> None:
        pass


def make_lock(ttl: float, **kwargs: bool) -> CountingLock:
    return CountingLock(LockContext(None, "ns", "j", 0, "me", ttl), **kwargs)  # type: ignore[arg-type]


def keeper_with_membership(seconds: float) -> tuple[LeaseKeeper, Membership, list[str]]:
    membership = Membership()
    membership.extend(time.monotonic(), seconds)
    lost: list[str] = []
    return LeaseKeeper(membership, lambda lease: lost.append(lease.lost_reason)), membership, lost


def test_holder_is_cut_off_before_its_membership_could_expire() -> None:
    keeper, membership, lost = keeper_with_membership(1.0)
    cut: list[bool] = []
    now = time.monotonic()
    lease = keeper.hold(make_lock(30), 1, now, lambda _lease: cut.append(True))
    keeper.check(now + 0.5)
    assert not lease.lost
    keeper.check(membership.valid_until - lease.margin)
    assert lease.lost and cut == [True]
    assert "membership" in lost[0]


def test_holder_is_cut_off_before_an_unrenewed_lock_expires() -> None:
    keeper, _, lost = keeper_with_membership(3600)
    now = time.monotonic()
    lease = keeper.hold(make_lock(2.0), 1, now)
    keeper.check(now + 2.0 - lease.margin)
    assert lease.lost
    assert "renewals failed" in lost[0]


def test_renewal_runs_in_the_background_and_a_refused_one_loses_the_lock() -> None:
    keeper, _, _lost = keeper_with_membership(3600)
    keeper.start()
    try:
        good = make_lock(0.3)
        bad = make_lock(0.3, still_ours=False)
        kept = keeper.hold(good, 1, time.monotonic())
        refused = keeper.hold(bad, 2, time.monotonic())
        time.sleep(0.8)
        assert good.renewals >= 2
        assert not kept.lost
        assert refused.lost and refused.lost_reason == "another process holds it now"
    finally:
        keeper.stop()


def test_a_lost_lease_is_reported_once() -> None:
    keeper, membership, lost = keeper_with_membership(1.0)
    keeper.hold(make_lock(30), 1, time.monotonic())
    keeper.check(membership.valid_until)
    keeper.check(membership.valid_until + 1)
    assert len(lost) == 1
