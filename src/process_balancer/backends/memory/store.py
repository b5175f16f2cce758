"""The shared state behind :class:`~process_balancer.backends.memory.MemoryBackend`.

A :class:`MemoryStore` plays the part of one Redis server: it holds any number of groups (one
per namespace) and every :class:`MemoryBackend` opened with the same ``memory://NAME`` in this
Python process shares it through a module-level registry. One ``threading.Lock`` per store
makes each operation atomic, as one Lua script is on Redis; the store's clock is its server
clock, so a test can drive membership and lock expiry with a :class:`ManualClock` instead of
sleeping.

Values are kept as the other backends store them (JSON text for traits, info and slots), so a
snapshot is decoded by the same :func:`~.codec.decode_group` and a test may plant a value the
decoder refuses.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from ..base import PRUNE_BATCH, StopSignal
from ..codec import Decoded, RawGroup, RawMember, version_value
from ..counts import count_to_pause, count_to_resume, count_to_set
from .clock import ManualClock as ManualClock

#: A clock returning seconds since the epoch, like ``time.time``.
Clock = Callable[[], float]
#: Where a value of a group lives, for messages: ``where("members", identity)``.
Where = Callable[..., str]
#: Seconds a departed member's deadline is remembered, as the Redis ``departed`` zset keeps it.
DEPARTED_KEPT = 3600.0
#: Events a listener may have waiting before it is told to read the state afresh instead.
EVENTS_KEPT = 1000


def is_time(raw: object) -> TypeGuard[float]:
    """Whether a stored deadline is a time (a test may plant anything)."""
    return isinstance(raw, (int, float)) and not isinstance(raw, bool)


@dataclass
class HeldLock:
    """A worker lock: like Redis's ``<token> <fence> <incarnation> <holder>`` with a TTL."""

    token: str
    fence: int
    incarnation: str
    holder: str
    expires_at: float


@dataclass
class Group:
    """One namespace's state; the fields mirror the Redis keys of docs/design.md."""

    version: Any = 0
    assignment_version: Any = 0
    members: dict[str, Any] = field(default_factory=dict)  # identity -> deadline (seconds)
    traits: dict[str, Any] = field(default_factory=dict)  # identity -> JSON text
    info: dict[str, Any] = field(default_factory=dict)
    assignment: dict[str, Any] = field(default_factory=dict)  # identity -> JSON slots
    unplaced: Any = None  # JSON slots, None until an assignment is written
    partitions: Any = None  # JSON {job: [count, generation]}, written with the assignment
    #: job -> its gates.GateRecord (anything else is unreadable, as a Redis key of another
    #: type)
    gates: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    paused: dict[str, Any] = field(default_factory=dict)  # job -> count it resumes to
    #: identity -> [(expires_at, JSON command)], in the order they were sent
    commands: defaultdict[str, list[tuple[float, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    #: command id -> (expires_at, identity -> time it acted): one expiry per command, renewed
    #: by every acknowledgement, as Redis's PEXPIRE on the whole hash
    acks: dict[str, tuple[float, dict[str, float]]] = field(default_factory=dict)
    locks: dict[str, HeldLock] = field(default_factory=dict)
    fences: dict[str, int] = field(default_factory=dict)  # outlive the locks they fenced
    incarnation: str | None = None
    #: The store's run id when the incarnation began: another one means the "server" restarted
    #: since (with this state restored from an older copy), as Redis's run_id does.
    server: str = ""
    grants_at: float = 0.0  # no worker lock is granted before this
    #: identity -> deadline of members pruned in the last hour: their locks are taken over
    #: only takeover_grace after it
    departed: dict[str, float] = field(default_factory=dict)

    def holds_grants(self, run_id: str, now: float, grace: float) -> bool:
        """No worker lock is granted: no heartbeat reached the store since it lost the group
        or restarted with an older copy of it (whose memberships look expired while their
        processes run), or a new incarnation waits for the holders of the old one to stop."""
        return self.incarnation is None or self.server != run_id or now < self.grants_at + grace

    def prune(self, identity: str, now: float, *, trim: bool) -> bool:
        """Remove at most PRUNE_BATCH expired members other than ``identity``, soonest first,
        remembering their deadlines; True if any was removed. The memory is trimmed to the
        last hour when anything changed (``trim`` or a removal)."""
        expired = sorted(
            (deadline, member)
            for member, deadline in self.members.items()
            if member != identity and is_time(deadline) and deadline <= now
        )[:PRUNE_BATCH]
        for deadline, member in expired:
            del self.members[member]
            self.traits.pop(member, None)
            self.info.pop(member, None)
            # Remembered so that its worker locks are taken over only takeover_grace after it.
            self.departed[member] = deadline
        if trim or expired:
            self.departed = {m: d for m, d in self.departed.items() if d >= now - DEPARTED_KEPT}
        return bool(expired)

    def raw(self, now: float, where: Where) -> RawGroup:
        """Everything a snapshot holds, undecoded, for :func:`~.codec.decode_group`."""
        raw = RawGroup(
            now=now,
            version=(where("version"), self.version),
            assignment_version=(where("assignment_version"), self.assignment_version),
            unplaced=(where("unplaced"), self.unplaced),
            partitions=(where("partitions"), self.partitions),
        )
        # Live members in deadline order; a deadline that is not a time is read (and named by
        # the decoding) rather than hidden, as SQLite does.
        live = [(m, d) for m, d in self.members.items() if not is_time(d) or d > now]
        live.sort(key=lambda entry: (not is_time(entry[1]), entry[1] if is_time(entry[1]) else 0))
        for identity, deadline in live:
            raw.members.append(
                RawMember(
                    identity,
                    deadline,
                    self.traits.get(identity, "{}"),
                    self.info.get(identity, "{}"),
                    where("members", identity),
                    where("traits", identity),
                    where("info", identity),
                )
            )
        raw.counts = [(job, value, where("counts", job)) for job, value in self.counts.items()]
        raw.paused = [(job, value, where("paused", job)) for job, value in self.paused.items()]
        raw.assignment = [(i, v, where("assignment", i)) for i, v in self.assignment.items()]
        return raw

    def repair(self, decoded: Decoded, now: float, where: Where, *, apply: bool) -> list[str]:
        """Rebuild the derived state as repair.lua does (only with ``apply``); the lines
        saying what is (or would be) done."""
        actions = []
        for problem in decoded.problems:
            item = str(problem.item)
            if problem.part == "members":
                actions.append(f"{problem.where}: removed ({problem.detail})")
                if apply:
                    for part in (self.members, self.traits, self.info):
                        part.pop(item, None)
            elif problem.part in ("traits", "info"):
                actions.append(
                    f"{problem.where}: removed ({problem.detail}); the process sends it again "
                    "at its next heartbeat"
                )
                if apply:
                    getattr(self, problem.part).pop(item, None)
            elif problem.part == "counts" and item in self.paused:
                actions.append(f"{problem.where}: set to 0 ({problem.detail}); it is paused")
                if apply:
                    self.counts[item] = 0
            elif problem.part in ("counts", "paused"):
                actions.append(f"{problem.where}: removed ({problem.detail})")
                if apply:
                    getattr(self, problem.part).pop(item, None)
            elif problem.part == "partitions":
                actions.append(
                    f"{problem.where}: removed ({problem.detail}); the next assignment starts "
                    "each job at a new generation"
                )
                if apply:
                    self.partitions = None
        actions.append(
            f"{where('assignment')}, {where('unplaced')}: cleared; the group computes a new "
            "assignment"
        )
        # Past every version the group used, so no process takes a new assignment for an old
        # one: the clock in ms when that is more, as repair.lua does.
        version = max(int(now * 1000), (version_value(self.version) or 0) + 1)
        actions.append(
            f"{where('version')}: set to {version}, past every earlier version, and "
            f"{where('assignment_version')} cleared, so every process recomputes"
        )
        if apply:
            self.assignment, self.unplaced = {}, None
            self.version, self.assignment_version = version, 0
        return actions

    # Counts are decided as set_count.lua, pause.lua and resume.lua decide them (see
    # ..counts), and a refusal changes nothing. The caller bumps the version when a count is
    # returned.

    def set_count(
        self,
        job_id: str,
        to: object,
        by: object,
        default: object,
        maximum: object,
        where: Where,
        unless_paused: bool = False,
    ) -> int | None:
        """Set or change the count (see Backend.set_count); ValueError when refused. None
        (nothing written) when ``unless_paused`` and the job is paused."""
        new = count_to_set(
            job_id,
            lambda: self.counts.get(job_id),
            to=to,
            by=by,
            default=default,
            maximum=maximum,
            where=where("counts", job_id),
        )
        if unless_paused and job_id in self.paused:
            return None
        self.counts[job_id] = new
        # A count set while the job is paused ends the pause: the latest word wins.
        self.paused.pop(job_id, None)
        return new

    def pause(self, job_id: str, default: object, maximum: object, where: Where) -> int | None:
        """Remember the count and set it to 0; None when paused already."""
        if job_id in self.paused:
            return None
        raw = self.counts.get(job_id)
        place = where("counts", job_id)
        current = count_to_pause(job_id, raw, default=default, maximum=maximum, where=place)
        self.paused[job_id] = current
        self.counts[job_id] = 0
        return current

    def resume(self, job_id: str, maximum: object, where: Where) -> int | None:
        """Restore the remembered count and forget it; None when not paused."""
        raw = self.paused.get(job_id)
        if raw is None:
            return None
        count = count_to_resume(job_id, raw, maximum=maximum, where=where("paused", job_id))
        self.counts[job_id] = count
        del self.paused[job_id]
        return count


class MemoryStore:
    """Every group of one ``memory://NAME``; hold :attr:`lock` to read or change any of it."""

    def __init__(
        self,
        name: str,
        clock: Clock | None = None,
        *,
        token: Callable[[int], str] = secrets.token_hex,
    ) -> None:
        self.name = name
        self.clock: Clock = clock if clock is not None else time.time
        #: ``token(n)``: n random bytes as hex, for lock tokens and incarnation ids (a
        #: simulation passes a seeded one, so that a run is repeatable).
        self.token = token
        self.lock = threading.Lock()
        #: listeners wait on it; every event is published with the lock held
        self.changed = threading.Condition(self.lock)
        self.groups: dict[str, Group] = {}
        #: namespace -> the pending events of each listener of that namespace
        self.listeners: defaultdict[str, list[list[str]]] = defaultdict(list)
        #: clock time of the last wipe: like a server that has just started, the store holds
        #: back locks of groups that begin within a hold of it
        self.wiped_at: float | None = None
        self._serial = itertools.count(1)
        #: Changes at every restart (:meth:`wipe`, :meth:`restart`), as a Redis run_id does.
        self.run_id = self.token(4)

    def group(self, namespace: str) -> Group:
        """The group of ``namespace``, empty (as a Redis without its keys) if never written."""
        group = self.groups.get(namespace)
        if group is None:
            group = self.groups[namespace] = Group()
        return group

    def incarnation_id(self) -> str:
        """A new incarnation id, never given before by this store (a wipe included)."""
        return f"memory.{next(self._serial)}.{self.token(3)}"

    def publish(self, namespace: str, message: str) -> None:
        """Queue ``message`` for every listener of ``namespace``; the caller holds the lock, so
        a listener woken by it reads the state only once the change is complete."""
        for pending in self.listeners.get(namespace, ()):
            if len(pending) >= EVENTS_KEPT:
                # A listener this far behind missed nothing it cannot recover from: it is
                # told to read the state afresh, as the SQLite listener is after a gap.
                pending[:] = ["assignment"]
            pending.append(message)
        self.changed.notify_all()

    def wipe(self) -> None:
        """Forget every group, fencing counters included, as a Redis restarted without
        persistence does. Listeners stay subscribed; each process notices at its next
        heartbeat, which begins a new incarnation."""
        self.restart({})

    def restart(self, groups: dict[str, Group]) -> None:
        """Restart as a server that loaded ``groups`` (an older copy of its state, as a
        Redis restarted from an old snapshot or a lagging replica promoted by a failover):
        the run id changes, so no worker lock is granted before a heartbeat has begun a new
        incarnation, and that one holds them back."""
        with self.lock:
            self.groups = groups
            self.wiped_at = self.clock()
            self.run_id = self.token(4)

    def subscribe(self, namespace: str) -> list[str]:
        """A new listener of ``namespace``: the list its events are queued on."""
        pending: list[str] = []
        with self.lock:
            self.listeners[namespace].append(pending)
        return pending

    def unsubscribe(self, namespace: str, pending: list[str]) -> None:
        """Forget the listener whose events queue on ``pending``."""
        with self.lock:
            # By identity: another listener's pending list may be equal to this one.
            self.listeners[namespace] = [x for x in self.listeners[namespace] if x is not pending]
            if not self.listeners[namespace]:
                del self.listeners[namespace]

    def listen(self, namespace: str, on_event: Callable[[str], None], stop: StopSignal) -> None:
        """Call ``on_event`` for each event of ``namespace`` until ``stop`` is set, outside the
        lock (a handler may call the backend). ``stop`` is checked every 0.1 s."""
        pending = self.subscribe(namespace)
        try:
            on_event("subscribed")
            while not stop.is_set():
                with self.lock:
                    if not pending:
                        self.changed.wait(0.1)
                    messages = pending[:]
                    pending.clear()
                for message in messages:
                    on_event(message)
        finally:
            self.unsubscribe(namespace, pending)


_registry: dict[str, MemoryStore] = {}
_registry_lock = threading.Lock()


def open_store(name: str, clock: Clock | None = None) -> MemoryStore:
    """The store called ``name`` in this process, created (on ``clock``) if there is none.

    A store keeps the clock it was created with: asking for another one is a ValueError, since
    two clocks in one store would let members expire out of order.
    """
    with _registry_lock:
        store = _registry.get(name)
        if store is None:
            store = _registry[name] = MemoryStore(name, clock)
        elif clock is not None and clock is not store.clock:
            raise ValueError(
                f"the in-memory store {name!r} already exists with another clock; pass the "
                "same clock to every backend of the store (or none)"
            )
        return store


def wipe(name: str) -> None:
    """Make the store ``name`` forget everything (see :meth:`MemoryStore.wipe`)."""
    with _registry_lock:
        store = _registry.get(name)
    if store is not None:
        store.wipe()


def discard(name: str) -> None:
    """Drop the store ``name`` from the registry: backends opened on it keep their copy, the
    next one opened with that name starts empty (tests call it when they are done)."""
    with _registry_lock:
        _registry.pop(name, None)
