"""The simulated scheduler and the invariant checker: what the simulation stands on."""

from __future__ import annotations

import random

import pytest

from process_balancer.testing.simulation.invariants import Checker
from process_balancer.testing.simulation.scheduler import (
    Owner,
    Scheduler,
    SimEvent,
    SimKernel,
    SimLock,
)


def make() -> tuple[Scheduler, Owner, SimKernel]:
    sched = Scheduler(random.Random(1))
    owner = Owner("p1")
    return sched, owner, SimKernel(sched, owner, random.Random(2))


def test_time_moves_only_when_every_task_waits() -> None:
    sched, _owner, kernel = make()
    seen: list[tuple[str, float]] = []

    def sleeper(name: str, seconds: float) -> None:
        seen.append((name, kernel.monotonic()))
        sched.sleep(seconds)
        seen.append((name, kernel.monotonic()))

    kernel.thread(lambda: sleeper("a", 5.0), "a").start()
    kernel.thread(lambda: sleeper("b", 2.0), "b").start()
    sched.run_until(sched.now + 10)
    start = seen[0][1]
    assert sorted((n, t - start) for n, t in seen) == [
        ("a", 0.0),
        ("a", 5.0),
        ("b", 0.0),
        ("b", 2.0),
    ]
    assert kernel.time() - kernel.monotonic() == pytest.approx(1_700_000_000.0)


def test_an_event_wakes_its_waiter_and_a_wait_times_out() -> None:
    sched, _owner, kernel = make()
    event = SimEvent(sched)
    results: list[bool] = []
    kernel.thread(lambda: results.append(event.wait(3.0)), "waiter").start()
    sched.run_until(sched.now + 1.0)
    assert results == []
    event.set()
    sched.run_until(sched.now + 1.0)
    assert results == [True]
    event.clear()
    kernel.thread(lambda: results.append(event.wait(0.5)), "late").start()
    sched.run_until(sched.now + 1.0)
    assert results == [True, False]


def test_a_contended_lock_makes_the_second_task_wait_for_the_release() -> None:
    sched, _owner, kernel = make()
    lock = SimLock(sched)
    order: list[str] = []

    def holder() -> None:
        with lock:
            order.append("held")
            sched.sleep(2.0)  # a backend call while holding the lock
            order.append("released")

    def other() -> None:
        sched.sleep(0.5)
        with lock:
            order.append("other")

    kernel.thread(holder, "holder").start()
    kernel.thread(other, "other").start()
    sched.run_until(sched.now + 5.0)
    assert order == ["held", "released", "other"]


def test_a_frozen_process_runs_nothing_until_thawed_and_a_killed_one_never_again() -> None:
    sched, owner, kernel = make()
    ticks: list[float] = []

    def ticker() -> None:
        while True:
            ticks.append(sched.now)
            sched.sleep(1.0)

    kernel.thread(ticker, "ticker").start()
    start = sched.now
    sched.run_until(start + 2.5)
    assert len(ticks) == 3
    sched.freeze(owner)
    sched.run_until(start + 6.5)
    assert len(ticks) == 3
    sched.thaw(owner)
    sched.run_until(start + 6.6)
    assert len(ticks) == 4 and ticks[-1] == pytest.approx(start + 6.5)
    sched.kill(owner)
    sched.run_until(start + 20)
    assert len(ticks) == 4
    sched.close([owner])
    assert all(task.finished for task in owner.tasks)


def test_the_same_seed_picks_the_same_order_and_another_seed_may_not() -> None:
    def order(seed: int) -> list[int]:
        sched = Scheduler(random.Random(seed))
        owner = Owner("p")
        kernel = SimKernel(sched, owner, random.Random(seed))
        seen: list[int] = []
        for i in range(8):
            kernel.thread(lambda i=i: seen.append(i), f"t{i}").start()
        sched.run_until(sched.now + 1)
        return seen

    assert order(7) == order(7)
    assert len({tuple(order(seed)) for seed in range(10)}) > 1


def test_the_checker_catches_an_overlap_nothing_explains() -> None:
    checker = Checker()
    slot = ("a", 0)
    assert checker.claim(slot, 10)
    first = checker.record_start(slot, "p1", 10, 1.0, freezes=0)
    assert checker.claim(slot, 11)
    second = checker.record_start(slot, "p2", 11, 1.5, freezes=0)
    checker.record_end(second, 1.8, freezes=0)
    checker.record_end(first, 2.0, freezes=0)  # refused (older token), but never paused
    assert [v.invariant for v in checker.violations] == ["exclusion"]
    assert "never paused" in checker.violations[0].detail


def test_the_checker_allows_a_paused_holder_whose_writes_are_refused() -> None:
    checker = Checker()
    slot = ("a", 0)
    checker.claim(slot, 10)
    first = checker.record_start(slot, "p1", 10, 1.0, freezes=0)
    checker.claim(slot, 11)
    second = checker.record_start(slot, "p2", 11, 1.5, freezes=0)
    checker.record_end(second, 1.8, freezes=0)
    checker.record_end(first, 9.0, freezes=1)  # p1 was frozen meanwhile: refused, allowed
    assert checker.violations == [] and checker.refused == 1


def test_the_checker_catches_a_fencing_token_that_does_not_increase() -> None:
    checker = Checker()
    checker.granted(("a", 0), "p1", 100, 1.0)
    checker.granted(("a", 0), "p2", 100, 2.0)
    assert [v.invariant for v in checker.violations] == ["fencing"]


def test_the_checker_catches_a_join_that_moves_slots_between_others() -> None:
    checker = Checker()
    before = {"p1": {"a": [0, 1]}, "p2": {"a": [2]}}
    fine = {"p1": {"a": [0]}, "p2": {"a": [2]}, "p3": {"a": [1]}}
    checker.assignment_written(before, fine, True, 1.0)
    assert checker.violations == []
    shuffled = {"p1": {"a": [0]}, "p2": {"a": [1]}, "p3": {"a": [2]}}
    checker.assignment_written(before, shuffled, True, 2.0)
    assert [v.invariant for v in checker.violations] == ["bounded moves"]
