"""Worker locks in the in-memory store, and the generation gate of partitioned jobs, as
Redis's ``lock_*.lua`` scripts decide them (see :class:`~..base.Gate`)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..base import Acquired, CorruptStateError, Gate
from ..codec import parse_partitions, report_once, shown
from ..common import lock_lifetime, log_takeover, member_of
from .store import Group, HeldLock, MemoryStore, Where, is_time


@dataclass
class GateRecord:
    """A partitioned job's gate, as Redis's ``gate:<job>`` hash: the generation its locks
    are taken under and every lock name taken under it. ``generation`` 0 grants nothing
    before ``blocked_until`` (it replaced an unreadable record)."""

    generation: int
    names: dict[str, None] = field(default_factory=dict)
    blocked_until: float = 0.0


def held_by_member(group: Group, lock: HeldLock, now: float, grace: float) -> bool:
    """``lock`` is live in the current incarnation and its holder's membership has not
    ended ``grace`` ago: nobody else may take it (a crashed holder's lock is free
    takeover_grace after its membership expired, not after the lock's whole TTL)."""
    if lock.expires_at <= now or lock.incarnation != group.incarnation:
        return False
    member = member_of(lock.holder)
    deadline = group.members.get(member, group.departed.get(member))
    return is_time(deadline) and deadline + grace > now


def lock_is_free(group: Group, name: str, now: float, grace: float) -> bool:
    """Nobody may still run under lock ``name``: it is absent or expired, of an earlier
    incarnation, or its holder's membership ended ``grace`` ago (or is unknown)."""
    lock = group.locks.get(name)
    return lock is None or not held_by_member(group, lock, now, grace)


def gate_admits(
    group: Group, gate: Gate, now: float, ttl: float, grace: float, where: Where
) -> GateRecord | None:
    """The job's gate record if a lock may be taken under ``gate`` now (the caller adds the
    lock's name to it once granted), else None; moves the gate to a new generation once
    every lock of the earlier one is free."""
    try:
        stored = parse_partitions(group.partitions, where("partitions"))
    except CorruptStateError as exc:
        report_once(f"{exc}; no lock of a partitioned job is granted until then")
        return None
    partition = stored.get(gate.job_id)
    if partition is None or partition.generation != gate.generation:
        return None
    record = group.gates.get(gate.job_id)
    if record is not None and not isinstance(record, GateRecord):
        report_once(
            f"{where('gate', gate.job_id)} holds {shown(record)}, not a gate this program "
            "wrote; it is replaced, and no lock of the job is granted until every holder "
            "under the old one has stopped (the lock's ttl and takeover_grace)"
        )
        group.gates[gate.job_id] = GateRecord(0, {}, now + lock_lifetime(ttl + grace))
        return None
    if record is None or (record.generation == 0 and now >= record.blocked_until):
        record = GateRecord(gate.generation)
        group.gates[gate.job_id] = record
        return record
    if record.generation == gate.generation:
        return record
    if record.generation == 0:
        return None
    if not all(lock_is_free(group, name, now, grace) for name in record.names):
        return None
    record.generation = gate.generation
    record.names = {}
    return record


def gate_keeps(group: Group, gate: Gate, name: str) -> bool:
    """A lock taken under ``gate`` may be renewed: its job's gate is still at that
    generation with the lock in it."""
    record = group.gates.get(gate.job_id)
    return (
        isinstance(record, GateRecord)
        and record.generation == gate.generation
        and name in record.names
    )


class MemoryLocks:
    """The worker-lock operations of :class:`~.backend.MemoryBackend`."""

    store: MemoryStore
    namespace: str

    if TYPE_CHECKING:

        def _group(self) -> AbstractContextManager[tuple[Group, float]]: ...

        def _where(self, part: str, item: str | None = None) -> str: ...

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
        token = token or self.store.token(12)
        previous = None
        with self._group() as (group, now):
            if group.holds_grants(self.store.run_id, now, grace):
                return None
            record = None
            if gate is not None:
                record = gate_admits(group, gate, now, ttl, grace, self._where)
                if record is None:
                    return None
            current = group.locks.get(name)
            if current is not None and current.holder != holder:
                if held_by_member(group, current, now, grace):
                    return None
                if current.expires_at > now and current.incarnation == group.incarnation:
                    previous = current.holder  # taken over from a holder that is gone
            # At least the clock in microseconds: tokens keep increasing across a wipe.
            fence = max(group.fences.get(name, 0) + 1, int(now * 1_000_000))
            group.fences[name] = fence
            expires_at = now + lock_lifetime(ttl + grace)
            group.locks[name] = HeldLock(token, fence, group.incarnation or "", holder, expires_at)
            if record is not None:
                record.names[name] = None
        if previous is not None:
            log_takeover(name, previous)
        return Acquired(token=token, fence=fence)

    def lock_renew(
        self, name: str, token: str, ttl: float, *, grace: float = 0.0, gate: Gate | None = None
    ) -> bool:
        with self._group() as (group, now):
            lock = group.locks.get(name)
            if lock is None or lock.expires_at <= now or lock.token != token:
                return False
            if lock.incarnation != group.incarnation:
                return False  # a lock of an earlier incarnation is never renewed
            if gate is not None and not gate_keeps(group, gate, name):
                return False
            lock.expires_at = now + lock_lifetime(ttl + grace)
            return True

    def lock_release(self, name: str, token: str) -> bool:
        with self._group() as (group, now):
            lock = group.locks.get(name)
            if lock is None or lock.expires_at <= now or lock.token != token:
                return False
            del group.locks[name]  # its fence stays in group.fences
            self.store.publish(self.namespace, f"released {name}")
            return True
