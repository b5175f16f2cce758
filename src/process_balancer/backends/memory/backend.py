"""In-memory coordination backend: a group inside one Python process.

For unit tests, which get the whole group protocol without a server and can move its clock by
hand, and for programs that run a group inside one process. Every ``MemoryBackend`` opened
with the same ``memory://NAME`` in this process shares one :class:`~.store.MemoryStore`,
so two "processes" of a test see one group; namespaces keep groups apart in a store.

Each operation holds the store's lock from its first read to its last write, as each Redis
operation is one Lua script, and follows that script (``backends/lua/``): version bumps,
pruning and the ``departed`` memory, incarnations, the assignment's compare-and-set, count
ceilings, lock takeover and fencing. Times are the store's clock, read with the lock held.

It neither outlives the process nor reaches another one, so a config file cannot name it
(``process-balancer run`` and the CLI commands would each see an empty store of their own).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ...config.defaults import MAX_WORKERS
from ..base import (
    Backend,
    BackendError,
    GroupSnapshot,
    HeartbeatResult,
    Inspection,
    Partition,
    RepairReport,
    StopSignal,
)
from ..codec import decode_group, dump_partitions, heartbeat_partitions, integer
from ..codec import dumps as _dumps
from ..codec import parse_slots as _parse_slots
from ..common import (
    ACK_TTL,
    COMMAND_TTL,
    decode_commands,
    readable_pauses,
    runtime_count,
    unplaced_slots,
)
from .locks import MemoryLocks
from .store import Clock, Group, ManualClock, MemoryStore, is_time, open_store, wipe

__all__ = ["ManualClock", "MemoryBackend", "store_name", "wipe"]


def store_name(url: str) -> str:
    """The store a ``memory://NAME`` URL names (``default`` for a bare ``memory://``)."""
    scheme, sep, rest = url.partition("://")
    if scheme.lower() != "memory" or not sep:
        raise ValueError(f"not a memory:// URL: {url!r}")
    return rest.rstrip("/") or "default"


class MemoryBackend(MemoryLocks, Backend):
    """Shared group state in a :class:`~.store.MemoryStore` of this Python process.

    ``clock`` (seconds since the epoch, ``time.time`` by default) belongs to the store: the
    first backend of a store sets it, the others may pass the same one or none.
    """

    multi_host = False

    def scope_notice(self, *, default: bool) -> str:
        return (
            f"in-memory backend {self.url}: the group lives inside this Python process; no "
            "other process can join it"
        )

    def __init__(
        self,
        url: str,
        namespace: str,
        *,
        clock: Clock | None = None,
        store: MemoryStore | None = None,
    ) -> None:
        """``store`` uses that store instead of the one ``url`` names in this process's
        registry (a simulation keeps its stores to itself)."""
        self.url = url
        self.namespace = namespace
        self.store = store if store is not None else open_store(store_name(url), clock)
        self._closed = False

    @property
    def clock(self) -> Clock:
        """The store's clock, which every deadline and expiry of its groups is read on."""
        return self.store.clock

    def wipe(self) -> None:
        """Make the store forget every group, as a server restarted empty (tests)."""
        self.store.wipe()

    @contextlib.contextmanager
    def _group(self) -> Iterator[tuple[Group, float]]:
        """This namespace's group and the store's clock, the store's lock held throughout."""
        with self.store.lock:
            if self._closed:
                raise BackendError(f"{self.display_url}: the backend was closed")
            yield self.store.group(self.namespace), self.store.clock()

    def _where(self, part: str, item: str | None = None) -> str:
        """Where a value lives, for messages: ``memory://NAME ns:members[identity]``."""
        return f"{self.display_url} {self.namespace}:{part}" + ("" if item is None else f"[{item}]")

    def _bump(self, group: Group) -> int:
        """Increment the state version and tell listeners (the caller holds the lock)."""
        group.version = integer(group.version, self._where("version")) + 1
        self.store.publish(self.namespace, "state")
        return int(group.version)

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
        traits_json = _dumps(traits)
        with self._group() as (group, now):
            version = integer(group.version, self._where("version"))
            why = self._why_new(group, now, version, known_incarnation, known_version, hold)
            changed = False
            if group.incarnation is None or why:
                group.incarnation = self.store.incarnation_id()
                group.server = self.store.run_id
                group.grants_at = now + hold if why else 0.0
                changed = True
            changed = group.prune(identity, now, trim=changed) or changed
            # A member whose deadline passed is treated as new: peers may have taken its locks.
            old = group.members.get(identity)
            joined = not is_time(old) or old <= now
            changed = changed or joined
            group.members[identity] = now + expiry
            if group.traits.get(identity) != traits_json:
                group.traits[identity] = traits_json
                changed = True
            group.info[identity] = _dumps(info)
            if changed:
                version = self._bump(group)
            av = integer(group.assignment_version, self._where("assignment_version"))
            slots_raw = partitions_raw = None
            if av != seen_assignment_version:
                slots_raw = group.assignment.get(identity, "{}")
                partitions_raw = group.partitions
            queued = group.commands.pop(identity, [])
            # The soonest deadline of another member: the caller wakes then to prune it.
            others = [d for m, d in group.members.items() if m != identity and is_time(d)]
            incarnation = group.incarnation
        slots = partitions = None
        if slots_raw is not None:
            slots = _parse_slots(slots_raw, self._where("assignment", identity))
            partitions = heartbeat_partitions(partitions_raw, self._where("partitions"))
        return HeartbeatResult(
            joined=joined,
            changed=changed,
            version=version,
            assignment_version=av,
            slots=slots,
            commands=decode_commands(
                [body for expires_at, body in queued if expires_at > now], identity
            ),
            next_expiry=max(0.0, min(others) - now) if others else None,
            incarnation=incarnation,
            server_time=now,
            new_incarnation=why,
            partitions=partitions,
        )

    def _why_new(
        self, group: Group, now: float, version: int, known: str, known_version: int, hold: float
    ) -> str:
        """Why a heartbeat begins a new incarnation that holds locks back ("" if it does not),
        as heartbeat.lua decides it (a restart changes the store's run id)."""
        if group.incarnation is None:
            if known:
                return "the backend no longer has the group state"
            wiped_at = self.store.wiped_at
            if wiped_at is not None and now < wiped_at + hold:
                # First after a wipe, as on a server that has just started: processes of the
                # lost incarnation may still run.
                return "the backend was wiped just now (as a server restarted empty)"
            return ""
        if group.server != self.store.run_id:
            return "the backend server changed (a restart or a failover)"
        if known == group.incarnation and version < known_version:
            return "the backend state went back to an older version"
        return ""

    def reset_incarnation(self, expected: str, hold: float) -> str:
        with self._group() as (group, now):
            if group.incarnation is None or group.incarnation != expected:
                return group.incarnation or ""
            group.incarnation = self.store.incarnation_id()
            group.server = self.store.run_id
            group.grants_at = now + hold
            self._bump(group)
            return group.incarnation

    def leave(self, identity: str) -> None:
        with self._group() as (group, _):
            removed = group.members.pop(identity, None) is not None
            group.traits.pop(identity, None)
            group.info.pop(identity, None)
            group.commands.pop(identity, None)
            if removed:
                self._bump(group)

    def snapshot(self) -> GroupSnapshot:
        with self._group() as (group, now):
            raw = group.raw(now, self._where)
        return decode_group(raw, lenient=False).snapshot

    def inspect(self) -> Inspection:
        with self._group() as (group, now):
            raw = group.raw(now, self._where)
        decoded = decode_group(raw, lenient=True)
        return Inspection(decoded.snapshot, decoded.paused, decoded.problems)

    def repair(self, *, apply: bool) -> RepairReport:
        with self._group() as (group, now):
            decoded = decode_group(group.raw(now, self._where), lenient=True)
            actions = group.repair(decoded, now, self._where, apply=apply)
            if apply:
                self.store.publish(self.namespace, "state")
        return RepairReport(actions, decoded.snapshot.counts, decoded.paused, apply)

    def write_assignment(
        self,
        version: int,
        slots: Mapping[str, Mapping[str, tuple[int, ...]]],
        unplaced: Mapping[str, tuple[int, ...]],
        partitions: Mapping[str, Partition] | None = None,
    ) -> bool:
        rows = {
            identity: _dumps({job: list(idx) for job, idx in slots[identity].items()})
            for identity in sorted(slots)
        }
        with self._group() as (group, _):
            current = integer(group.version, self._where("version"))
            stored = integer(group.assignment_version, self._where("assignment_version"))
            # Compare-and-set: one assignment per version, and only for the current version.
            if current != version or stored == version:
                return False
            group.assignment = rows
            group.unplaced = _dumps({job: list(idx) for job, idx in unplaced.items()})
            group.partitions = dump_partitions(partitions)
            group.assignment_version = version
            self.store.publish(self.namespace, "assignment")
        return True

    # -- worker counts -----------------------------------------------------------------------

    def get_count(self, job_id: str) -> int | None:
        with self._group() as (group, _):
            raw = group.counts.get(job_id)
        return runtime_count(raw, self._where("counts", job_id))

    def set_count(
        self,
        job_id: str,
        *,
        to: int | None,
        by: int | None,
        default: int,
        maximum: int = MAX_WORKERS,
    ) -> int:
        with self._group() as (group, _):
            count = group.set_count(job_id, to, by, default, maximum, self._where)
            self._bump(group)
        assert count is not None
        return count

    def set_count_unless_paused(
        self,
        job_id: str,
        *,
        to: int | None,
        by: int | None,
        default: int,
        maximum: int = MAX_WORKERS,
    ) -> int | None:
        with self._group() as (group, _):
            count = group.set_count(job_id, to, by, default, maximum, self._where, True)
            if count is not None:
                self._bump(group)
        return count

    def clear_count(self, job_id: str) -> None:
        with self._group() as (group, _):
            group.counts.pop(job_id, None)
            group.paused.pop(job_id, None)
            self._bump(group)

    def pause(self, job_id: str, *, default: int, maximum: int = MAX_WORKERS) -> int | None:
        with self._group() as (group, _):
            count = group.pause(job_id, default, maximum, self._where)
            if count is not None:
                self._bump(group)
        return count

    def resume(self, job_id: str, *, maximum: int = MAX_WORKERS) -> int | None:
        with self._group() as (group, _):
            count = group.resume(job_id, maximum, self._where)
            if count is not None:
                self._bump(group)
        return count

    def paused_counts(self) -> dict[str, int]:
        with self._group() as (group, _):
            stored = list(group.paused.items())
        return readable_pauses((job, raw, self._where("paused", job)) for job, raw in stored)

    def unplaced(self) -> dict[str, list[int]]:
        with self._group() as (group, _):
            raw = group.unplaced
        return unplaced_slots(raw or "{}", self._where("unplaced"))

    # -- remote commands ---------------------------------------------------------------------

    def send_command(self, identity: str, command: Mapping[str, Any]) -> bool:
        body = _dumps(command)
        with self._group() as (group, now):
            for member in list(group.commands):
                group.commands[member] = [c for c in group.commands[member] if c[0] > now]
                if not group.commands[member]:
                    del group.commands[member]
            deadline = group.members.get(identity)
            if not is_time(deadline) or deadline <= now:
                return False
            group.commands[identity].append((now + COMMAND_TTL, body))
            # Wake the member now; it also finds the command at its next heartbeat.
            self.store.publish(self.namespace, f"command {identity}")
        return True

    def ack_command(self, identity: str, command_id: str, at: float) -> None:
        with self._group() as (group, now):
            group.acks = {k: v for k, v in group.acks.items() if v[0] > now}
            acks = group.acks.get(command_id, (0.0, {}))[1]
            acks[identity] = at
            # Every acknowledgement renews the expiry of the whole command's, as Redis's does.
            group.acks[command_id] = (now + ACK_TTL, acks)

    def command_acks(self, command_id: str) -> dict[str, float]:
        with self._group() as (group, now):
            expires_at, acks = group.acks.get(command_id, (0.0, {}))
            return dict(acks) if expires_at > now else {}

    # -- notifications -----------------------------------------------------------------------

    def listen(self, on_event: Callable[[str], None], stop: StopSignal) -> None:
        self.store.listen(self.namespace, on_event, stop)

    def close(self) -> None:
        """Refuse further calls (as a closed connection would); the store lives on for the
        other backends of its name."""
        self._closed = True
