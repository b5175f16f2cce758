"""The simulated network between each process and the backend server.

A :class:`SimBackend` is what one simulated process holds as its backend. Every call crosses a
:class:`Link`: it takes a seeded latency each way and is then applied at one instant to the
shared :class:`~process_balancer.backends.memory.MemoryBackend` (the "server", with Redis
semantics: atomic operations, TTLs and its own clock). The link injects the faults a real
network has:

- **slow**: the request takes most of the client's timeout to arrive, then succeeds;
- **slow reply**: the request is applied at once, its answer takes most of the timeout;
- **lost**: the request never arrives; the caller times out (BackendError);
- **late**: the caller times out, and the request is applied afterwards all the same;
- **reply lost**: the request is applied, the caller times out;
- **congestion**: every call is slow, one way or the other, for a while;
- **partition**: every call fails (after the timeout, or at once when refused) and events
  published meanwhile are lost, until the partition heals.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from ...backends.base import (
    Acquired,
    Backend,
    BackendError,
    Gate,
    GroupSnapshot,
    HeartbeatResult,
    Inspection,
    Partition,
    RepairReport,
    StopSignal,
)
from ...backends.memory import MemoryBackend
from ...backends.memory.store import MemoryStore
from ...config.defaults import MAX_WORKERS
from .scheduler import Scheduler, SimEvent

T = TypeVar("T")


class World(Protocol):
    """What the network tells the simulation (implemented by ``world.World``)."""

    sched: Scheduler

    def apply_late(
        self, process: str, op: str, delay: float, apply: Callable[[], object]
    ) -> None: ...

    def heartbeat_applied(self, label: str, result: HeartbeatResult) -> None: ...

    def lock_granted(self, name: str, holder: str, fence: int) -> None: ...

    def assignment_context(self) -> tuple[int, Any]: ...

    def assignment_written(self, before: tuple[int, Any], slots: Any, unplaced: Any) -> None: ...


#: Seconds a client waits for an answer before it gives up (the clients' call timeout).
CALL_TIMEOUT = 1.0
#: Calls whose faults the link may inject; the others (operator commands) always get through.
FAULTY = frozenset(
    {
        "heartbeat",
        "lock_acquire",
        "lock_renew",
        "lock_release",
        "write_assignment",
        "snapshot",
        "leave",
        "reset_incarnation",
    }
)


class SimStore(MemoryStore):
    """A memory store that also wakes the simulated listeners when it publishes."""

    def __init__(self, name: str, clock: Callable[[], float], token: Callable[[int], str]):
        super().__init__(name, clock, token=token)
        self.sim_listeners: list[SimEvent] = []

    def publish(self, namespace: str, message: str) -> None:
        super().publish(namespace, message)
        for event in self.sim_listeners:
            event.set()


class Link:
    """One process's connection to the server, and the faults it injects."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        #: None, "blackhole" (calls time out) or "refused" (calls fail at once).
        self.cut: str | None = None
        #: Probability that a call meets a fault (slow, lost, late, reply lost).
        self.noise = 0.0
        #: Every call is slow, one way or the other (a congested link).
        self.slow = False

    def latency(self) -> float:
        return self.rng.uniform(0.0002, 0.003)

    def fate(self, op: str) -> str:
        if self.slow and op in FAULTY:
            return self.rng.choice(("slow", "slow reply"))
        if self.noise and op in FAULTY and self.rng.random() < self.noise:
            return self.rng.choice(("slow", "slow reply", "lost", "late", "reply lost"))
        return "ok"


class SimBackend(Backend):
    """One process's view of the server, across its :class:`Link`."""

    multi_host = True

    def __init__(self, world: World, process: str, server: MemoryBackend, link: Link) -> None:
        self.world = world
        self.process = process
        self.server = server
        self.link = link
        self.url = f"sim://{process}"
        self.namespace = server.namespace

    def _call(self, op: str, apply: Callable[[], T]) -> T:
        sched = self.world.sched
        link = self.link
        if link.cut == "refused":
            sched.sleep(link.latency())
            raise BackendError(f"{op}: connection refused (partitioned)")
        if link.cut == "blackhole":
            sched.sleep(CALL_TIMEOUT)
            raise BackendError(f"{op}: timed out after {CALL_TIMEOUT:g}s (partitioned)")
        fate = link.fate(op)
        out, back = link.latency(), link.latency()
        if fate == "slow":
            out += link.rng.uniform(0.3, 0.6) * CALL_TIMEOUT
        elif fate == "slow reply":
            back += link.rng.uniform(0.3, 0.9) * CALL_TIMEOUT
        elif fate == "lost":
            sched.sleep(CALL_TIMEOUT)
            raise BackendError(f"{op}: timed out after {CALL_TIMEOUT:g}s (request lost)")
        elif fate == "late":
            delay = CALL_TIMEOUT + link.rng.uniform(0.0, 2.0)
            self.world.apply_late(self.process, op, delay, apply)
            sched.sleep(CALL_TIMEOUT)
            raise BackendError(f"{op}: timed out after {CALL_TIMEOUT:g}s (request delayed)")
        sched.sleep(out)
        if link.cut is not None:
            sched.sleep(CALL_TIMEOUT - out)
            raise BackendError(f"{op}: timed out (partitioned while sent)")
        result = apply()
        if fate == "reply lost":
            sched.sleep(CALL_TIMEOUT - out)
            raise BackendError(f"{op}: timed out after {CALL_TIMEOUT:g}s (reply lost)")
        sched.sleep(back)
        if link.cut is not None:
            sched.sleep(max(0.0, CALL_TIMEOUT - out - back))
            raise BackendError(f"{op}: timed out (partitioned before the reply)")
        return result

    # -- membership --------------------------------------------------------------------------

    def heartbeat(
        self,
        identity: str,
        *,
        traits: Mapping[str, Any],
        info: Mapping[str, Any],
        expiry: float,
        seen_assignment_version: int,
        known_incarnation: str = "",
        known_version: int = 0,
        hold: float = 0.0,
    ) -> HeartbeatResult:
        def apply() -> HeartbeatResult:
            result = self.server.heartbeat(
                identity,
                traits=traits,
                info=info,
                expiry=expiry,
                seen_assignment_version=seen_assignment_version,
                known_incarnation=known_incarnation,
                known_version=known_version,
                hold=hold,
            )
            self.world.heartbeat_applied(self.process, result)
            return result

        return self._call("heartbeat", apply)

    def reset_incarnation(self, expected: str, hold: float) -> str:
        return self._call(
            "reset_incarnation", lambda: self.server.reset_incarnation(expected, hold)
        )

    def leave(self, identity: str) -> None:
        self._call("leave", lambda: self.server.leave(identity))

    def snapshot(self) -> GroupSnapshot:
        return self._call("snapshot", self.server.snapshot)

    def write_assignment(
        self,
        version: int,
        slots: Mapping[str, Mapping[str, tuple[int, ...]]],
        unplaced: Mapping[str, tuple[int, ...]],
        partitions: Mapping[str, Partition] | None = None,
    ) -> bool:
        def apply() -> bool:
            before = self.world.assignment_context()
            written = self.server.write_assignment(version, slots, unplaced, partitions)
            if written:
                self.world.assignment_written(before, slots, unplaced)
            return written

        return self._call("write_assignment", apply)

    def inspect(self) -> Inspection:
        return self._call("inspect", self.server.inspect)

    def repair(self, *, apply: bool) -> RepairReport:
        return self._call("repair", lambda: self.server.repair(apply=apply))

    # -- counts ------------------------------------------------------------------------------

    def get_count(self, job_id: str) -> int | None:
        return self._call("get_count", lambda: self.server.get_count(job_id))

    def set_count(
        self, job_id: str, *, to: int | None, by: int | None, default: int, maximum: int = 0
    ) -> int:
        return self._call(
            "set_count",
            lambda: self.server.set_count(job_id, to=to, by=by, default=default, maximum=maximum),
        )

    def set_count_unless_paused(
        self,
        job_id: str,
        *,
        to: int | None,
        by: int | None,
        default: int,
        maximum: int = MAX_WORKERS,
    ) -> int | None:
        return self._call(
            "set_count_unless_paused",
            lambda: self.server.set_count_unless_paused(
                job_id, to=to, by=by, default=default, maximum=maximum
            ),
        )

    def clear_count(self, job_id: str) -> None:
        self._call("clear_count", lambda: self.server.clear_count(job_id))

    def pause(self, job_id: str, *, default: int, maximum: int = 0) -> int | None:
        return self._call(
            "pause", lambda: self.server.pause(job_id, default=default, maximum=maximum)
        )

    def resume(self, job_id: str, *, maximum: int = 0) -> int | None:
        return self._call("resume", lambda: self.server.resume(job_id, maximum=maximum))

    def paused_counts(self) -> dict[str, int]:
        return self._call("paused_counts", self.server.paused_counts)

    def unplaced(self) -> dict[str, list[int]]:
        return self._call("unplaced", self.server.unplaced)

    # -- commands ----------------------------------------------------------------------------

    def send_command(self, identity: str, command: Mapping[str, Any]) -> bool:
        return self._call("send_command", lambda: self.server.send_command(identity, command))

    def ack_command(self, identity: str, command_id: str, at: float) -> None:
        self._call("ack_command", lambda: self.server.ack_command(identity, command_id, at))

    def command_acks(self, command_id: str) -> dict[str, float]:
        return self._call("command_acks", lambda: self.server.command_acks(command_id))

    # -- locks -------------------------------------------------------------------------------

    def lock_acquire(
        self,
        name: str,
        holder: str,
        ttl: float,
        *,
        grace: float = 0.0,
        token: str | None = None,
        gate: Gate | None = None,
    ) -> Acquired | None:
        def apply() -> Acquired | None:
            acquired = self.server.lock_acquire(
                name, holder, ttl, grace=grace, token=token, gate=gate
            )
            if acquired is not None:
                self.world.lock_granted(name, holder, acquired.fence)
            return acquired

        return self._call("lock_acquire", apply)

    def lock_renew(
        self, name: str, token: str, ttl: float, *, grace: float = 0.0, gate: Gate | None = None
    ) -> bool:
        return self._call(
            "lock_renew", lambda: self.server.lock_renew(name, token, ttl, grace=grace, gate=gate)
        )

    def lock_release(self, name: str, token: str) -> bool:
        return self._call("lock_release", lambda: self.server.lock_release(name, token))

    # -- events ------------------------------------------------------------------------------

    def listen(self, on_event: Callable[[str], None], stop: StopSignal) -> None:
        """Deliver the server's events (after a latency) until ``stop``; events published
        while the link is cut are lost, as on a dropped subscription."""
        store = self.server.store
        sched = self.world.sched
        assert isinstance(store, SimStore)
        pending = store.subscribe(self.namespace)
        wake = SimEvent(sched)
        store.sim_listeners.append(wake)
        try:
            on_event("subscribed")
            while not stop.is_set():
                if not pending:
                    wake.clear()
                    wake.wait(1.0)
                    continue
                messages = pending[:]
                pending.clear()
                if self.link.cut is not None:
                    continue
                sched.sleep(self.link.latency())
                for message in messages:
                    on_event(message)
        finally:
            store.sim_listeners.remove(wake)
            store.unsubscribe(self.namespace, pending)

    def close(self) -> None:
        pass
