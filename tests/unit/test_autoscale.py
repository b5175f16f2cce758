"""The autoscaler in-process, on the in-memory backend with a clock the test moves: one
evaluating process per job, clamping, cooldown, pause (also one that lands during an
evaluation), and a desired_workers() that fails."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import process_balancer
from process_balancer.backends.memory.backend import ManualClock, MemoryBackend
from process_balancer.backends.memory.store import discard
from process_balancer.config.autoscale import AutoscaleConfig
from process_balancer.runtime.autoscale import AutoscaledJob, Autoscaler
from process_balancer.runtime.kernel import Kernel

JOB = "q"


class Depth(process_balancer.Base):
    """Wants as many workers as ``options['queue']['depth']`` says; counts its calls."""

    def desired_workers(self) -> Any:
        queue = self.options["queue"]
        queue["calls"].append(queue["who"])
        value = queue["depth"]
        if callable(value):
            value = value()
        if isinstance(value, Exception):
            raise value
        return value


class ClockKernel(Kernel):
    """The production kernel with the backend's manual clock as its monotonic clock."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock

    def monotonic(self) -> float:  # type: ignore[override]
        return self.clock()

    def time(self) -> float:  # type: ignore[override]
        return self.clock()

    def uniform(self, a: float, b: float) -> float:  # type: ignore[override]
        return 1.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_000.0)


@pytest.fixture
def url() -> Iterator[str]:
    name = f"pbtest-{uuid.uuid4().hex[:12]}"
    yield f"memory://{name}"
    discard(name)


@pytest.fixture
def backend(url: str, clock: ManualClock) -> Iterator[MemoryBackend]:
    b = MemoryBackend(url, "ns", clock=clock)
    yield b
    b.close()


@pytest.fixture
def queue() -> dict[str, Any]:
    """The fake queue the test controls: its depth, and who called desired_workers()."""
    return {"depth": 1, "calls": [], "who": None}


def beat(backend: MemoryBackend, identity: str, expiry: float = 3.0) -> None:
    traits = {"capacity": 10, "active": True, "jobs": [JOB], "defaults": {JOB: 2}}
    backend.heartbeat(identity, traits=traits, info={}, expiry=expiry, seen_assignment_version=-1)


def make(
    backend: MemoryBackend,
    clock: ManualClock,
    queue: dict[str, Any],
    identity: str = "a",
    **rule: Any,
) -> Autoscaler:
    """A joined, active process ``identity`` autoscaling job ``q`` (workers 2 in its config)."""
    beat(backend, identity)
    rule = {"min": 1, "max": 5, "interval": 1.0, "cooldown": 0.0, **rule}
    job = AutoscaledJob(
        job_id=JOB,
        job_class=Depth,
        rule=AutoscaleConfig(**rule),
        options={"queue": queue},
        default=2,
        maximum=100,
        grace=1.0,
    )
    scaler = Autoscaler(backend, identity, [job], kernel=ClockKernel(clock))
    scaler.set_active(True)
    return scaler


def run(scaler: Autoscaler, queue: dict[str, Any]) -> None:
    queue["who"] = scaler.identity
    scaler.step()


def decision(scaler: Autoscaler) -> dict[str, Any]:
    published: dict[str, Any] = scaler.info()["autoscale"][JOB]
    return published


def test_the_count_follows_desired_workers_clamped_to_min_and_max(
    backend: MemoryBackend, clock: ManualClock, queue: dict[str, Any]
) -> None:
    scaler = make(backend, clock, queue)
    queue["depth"] = 4
    run(scaler, queue)
    assert backend.get_count(JOB) == 4
    assert decision(scaler)["last_change"] == {"at": clock(), "from": 2, "to": 4}

    clock.advance(1.0)
    queue["depth"] = 50
    run(scaler, queue)
    assert backend.get_count(JOB) == 5
    assert decision(scaler)["last"]["desired"] == 50
    assert decision(scaler)["last"]["target"] == 5

    clock.advance(1.0)
    queue["depth"] = -3
    run(scaler, queue)
    assert backend.get_count(JOB) == 1


def test_nothing_is_written_while_the_count_is_what_desired_workers_wants(
    backend: MemoryBackend, clock: ManualClock, queue: dict[str, Any]
) -> None:
    scaler = make(backend, clock, queue)
    queue["depth"] = 2  # the config's workers
    run(scaler, queue)
    assert backend.get_count(JOB) is None
    assert decision(scaler)["last"]["action"] == "steady"
    assert decision(scaler)["last_change"] is None


def test_an_evaluation_waits_for_its_interval(
    backend: MemoryBackend, clock: ManualClock, queue: dict[str, Any]
) -> None:
    scaler = make(backend, clock, queue, interval=10.0)
    run(scaler, queue)
    clock.advance(9.0)
    run(scaler, queue)
    assert len(queue["calls"]) == 1
    clock.advance(1.0)
    run(scaler, queue)
    assert len(queue["calls"]) == 2


def test_scaling_up_is_at_once_scaling_down_waits_for_the_cooldown(
    backend: MemoryBackend, clock: ManualClock, queue: dict[str, Any]
) -> None:
    scaler = make(backend, clock, queue, cooldown=30.0)
    queue["depth"] = 5
    run(scaler, queue)
    assert backend.get_count(JOB) == 5  # up: no wait

    queue["depth"] = 1
    for _ in range(29):
        clock.advance(1.0)
        beat(backend, "a")
        run(scaler, queue)
    assert backend.get_count(JOB) == 5
    assert decision(scaler)["last"]["action"] == "cooldown"
    clock.advance(1.0)  # 30 s since the last change
    beat(backend, "a")
    run(scaler, queue)
    assert backend.get_count(JOB) == 1


def test_a_process_that_begins_evaluating_waits_one_cooldown_before_scaling_down(
    backend: MemoryBackend, clock: ManualClock, queue: dict[str, Any]
) -> None:
    backend.set_count(JOB, to=4, by=None, default=2)
    scaler = make(backend, clock, queue, cooldown=5.0)
    queue["depth"] = 1
    run(scaler, queue)
    assert backend.get_count(JOB) == 4
    clock.advance(5.0)
    run(scaler, queue)
    assert backend.get_count(JOB) == 1


def test_a_paused_job_is_left_alone_until_it_is_resumed(
    backend: MemoryBackend, clock: ManualClock, queue: dict[str, Any]
) -> None:
    scaler = make(backend, clock, queue)
    backend.pause(JOB, default=2)
    queue["depth"] = 5
    run(scaler, queue)
    assert backend.get_count(JOB) == 0
    assert backend.paused_counts() == {JOB: 2}
    assert decision(scaler)["last"]["action"] == "paused"

    backend.resume(JOB)
    clock.advance(1.0)
    run(scaler, queue)
    assert backend.get_count(JOB) == 5


class PausedAtRenewal(MemoryBackend):
    """A process's backend on which the operator's pause, sent by another client of the group,
    lands when the autoscale lock is renewed: after the autoscaler saw the job unpaused,
    before it writes the count."""

    operator: MemoryBackend | None = None

    def lock_renew(self, name: str, token: str, ttl: float, **options: Any) -> bool:
        if self.operator is not None:
            self.operator.pause(JOB, default=2)
            self.operator = None
        return super().lock_renew(name, token, ttl, **options)


@pytest.mark.parametrize("lands", ["during desired_workers()", "after the paused check"])
def test_a_pause_that_lands_during_an_evaluation_wins(
    url: str, clock: ManualClock, queue: dict[str, Any], lands: str
) -> None:
    backend = PausedAtRenewal(url, "ns", clock=clock)
    operator = MemoryBackend(url, "ns", clock=clock)
    try:
        backend.set_count(JOB, to=3, by=None, default=2)
        scaler = make(backend, clock, queue)
        if lands == "during desired_workers()":
            queue["depth"] = lambda: (operator.pause(JOB, default=2), 5)[1]
        else:
            backend.operator = operator
            queue["depth"] = 5
        run(scaler, queue)
        assert backend.paused_counts() == {JOB: 3}
        assert backend.get_count(JOB) == 0
        assert decision(scaler)["last"]["action"] == "paused"
        assert decision(scaler)["last_change"] is None

        operator.resume(JOB)
        clock.advance(1.0)
        queue["depth"] = 5
        run(scaler, queue)
        assert backend.get_count(JOB) == 5
    finally:
        operator.close()
        backend.close()


@pytest.mark.parametrize(
    ("depth", "logged"),
    [
        (RuntimeError("queue unreachable"), "desired_workers() raised RuntimeError"),
        ("3", "desired_workers() returned '3', not an integer"),
        (2.5, "desired_workers() returned 2.5, not an integer"),
        (True, "desired_workers() returned None, not an integer"),
    ],
)
def test_a_desired_workers_that_fails_is_logged_once_and_skipped(
    backend: MemoryBackend,
    clock: ManualClock,
    queue: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    depth: object,
    logged: str,
) -> None:
    scaler = make(backend, clock, queue)
    queue["depth"] = depth
    with caplog.at_level(logging.WARNING, "process_balancer.runtime.autoscale"):
        for _ in range(3):
            run(scaler, queue)
            clock.advance(1.0)
    assert len(queue["calls"]) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and logged in warnings[0], warnings
    assert backend.get_count(JOB) is None
    assert decision(scaler)["last"]["action"] == "error"

    queue["depth"] = 4
    run(scaler, queue)
    assert backend.get_count(JOB) == 4


def test_only_the_holder_of_the_lock_evaluates(
    backend: MemoryBackend, clock: ManualClock, queue: dict[str, Any]
) -> None:
    a = make(backend, clock, queue, "a")
    b = make(backend, clock, queue, "b")
    for _ in range(5):
        run(a, queue)
        run(b, queue)
        clock.advance(1.0)
        beat(backend, "a")
        beat(backend, "b")
    assert queue["calls"] == ["a"] * 5
    assert decision(a)["evaluating"] and not decision(b)["evaluating"]


def test_a_process_going_quiet_hands_evaluation_to_a_peer(
    backend: MemoryBackend, clock: ManualClock, queue: dict[str, Any]
) -> None:
    a = make(backend, clock, queue, "a")
    b = make(backend, clock, queue, "b")
    run(a, queue)
    run(b, queue)
    a.set_active(False)
    run(a, queue)  # releases the lock
    assert not decision(a)["evaluating"]
    clock.advance(1.0)
    run(b, queue)
    assert queue["calls"] == ["a", "b"]
    assert decision(b)["evaluating"]


def test_a_peer_takes_evaluation_over_once_the_holders_membership_expired(
    backend: MemoryBackend, clock: ManualClock, queue: dict[str, Any]
) -> None:
    a = make(backend, clock, queue, "a")
    b = make(backend, clock, queue, "b")
    run(a, queue)
    run(b, queue)
    started = clock()
    while "b" not in queue["calls"]:  # a dies: it neither beats nor steps any more
        clock.advance(1.0)
        beat(backend, "b")
        run(b, queue)
    # a's membership expires after 3 s; b takes the lock takeover_grace (1 s) later.
    assert queue["calls"] == ["a", "b"] and clock() - started == 4.0
    assert decision(b)["evaluating"]


def test_the_published_decision_names_the_bounds(
    backend: MemoryBackend, clock: ManualClock, queue: dict[str, Any]
) -> None:
    scaler = make(backend, clock, queue, min=2, max=8, interval=5.0, cooldown=7.0)
    queue["depth"] = 3
    run(scaler, queue)
    published = decision(scaler)
    assert {k: published[k] for k in ("min", "max", "interval", "cooldown", "evaluating")} == {
        "min": 2,
        "max": 8,
        "interval": 5.0,
        "cooldown": 7.0,
        "evaluating": True,
    }
    assert published["last"] == {
        "at": clock(),
        "action": "scaled",
        "desired": 3,
        "target": 3,
        "count": 3,
    }
