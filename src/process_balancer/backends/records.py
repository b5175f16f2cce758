"""The values the :class:`~.base.Backend` interface passes and returns: what a heartbeat,
a snapshot, an inspection or a repair reads, a worker lock that was taken, a partitioned job's
count and generation, and a value that cannot be read. :mod:`.base` exports them all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Problem:
    """One value in the backend that cannot be read, where it is and what fixes it."""

    where: str  # a Redis key (with the hash field), or schema.table[namespace/key]
    detail: str  # "holds 'x', expected an integer"
    fix: str
    #: which part of the group's state: version, assignment_version, members, traits, info,
    #: counts, paused, assignment, unplaced, partitions, commands, acks
    part: str
    item: str | None = None  # the member identity, job id or key within the part
    raw: Any = None  # the value found, for a repair that removes it only if it is unchanged

    def __str__(self) -> str:
        return f"{self.where} {self.detail}; {self.fix}"


@dataclass(frozen=True)
class Partition:
    """A job's worker count as the stored assignment spreads it, and its generation: a
    number that changes (increases) whenever that count changes, stored with the assignment
    so that every slot agrees on both."""

    count: int
    generation: int


@dataclass(frozen=True)
class Gate:
    """A worker lock of a partitioned job is taken and renewed under its job's generation.

    A lock under a gate is granted only while the stored assignment's generation of
    ``job_id`` is ``generation``, and a new generation's first grant waits until every lock
    taken under the job's earlier generation is free (released, expired, of an earlier
    incarnation or of a holder whose membership ended ``takeover_grace`` ago): the slots of
    one generation never run beside those of another.
    """

    job_id: str
    generation: int


@dataclass(frozen=True)
class HeartbeatResult:
    joined: bool  # the member was not in the group before this heartbeat
    changed: bool  # this heartbeat changed the group's state version
    version: int  # current state version
    assignment_version: int  # state version the stored assignment was computed from
    #: this member's slots (job -> indexes) when the assignment changed since ``seen``, else None
    slots: dict[str, tuple[int, ...]] | None
    commands: list[dict[str, Any]] = field(default_factory=list)
    #: seconds until the soonest heartbeat deadline of another member (None: no other member),
    #: so a crashed peer is pruned right when it expires, not up to an interval later
    next_expiry: float | None = None
    #: the group's incarnation: changes when the backend lost or replaced the group's state
    #: (restarted empty, restored, failed over) or when a process saw its clock jump
    incarnation: str = ""
    #: the backend's clock when it ran the heartbeat (seconds since the epoch)
    server_time: float | None = None
    #: why a new incarnation began with this heartbeat ("" when it did not)
    new_incarnation: str = ""
    #: every job's count and generation as the stored assignment has them, whenever
    #: ``slots`` is given (None without it, and with it when they cannot be read: the caller
    #: then asks for a new assignment, which rewrites them)
    partitions: dict[str, Partition] | None = None


@dataclass(frozen=True)
class MemberState:
    identity: str
    deadline: float  # backend clock, seconds since the epoch
    traits: dict[str, Any]  # capacity, active, jobs, defaults, started_at, hostname, pid
    info: dict[str, Any]  # volatile: running slots, errors, restarts


@dataclass(frozen=True)
class GroupSnapshot:
    """A consistent read of everything the assignment is computed from."""

    version: int
    assignment_version: int
    members: list[MemberState]
    counts: dict[str, int]
    assignment: dict[str, dict[str, list[int]]]
    unplaced: dict[str, list[int]]
    #: the backend's clock when the snapshot was read (seconds since the epoch), if it has one
    now: float | None = None
    #: each job's count and generation, stored with the assignment
    partitions: dict[str, Partition] = field(default_factory=dict)


@dataclass(frozen=True)
class Inspection:
    """Everything of a group that could be read, and what could not (for ``status``)."""

    snapshot: GroupSnapshot  # unreadable parts are left out; an unreadable version reads as 0
    paused: dict[str, int]
    problems: list[Problem]


@dataclass(frozen=True)
class RepairReport:
    """What ``repair`` did, or would do without ``apply``."""

    actions: list[str]  # one line per change
    counts: dict[str, int]  # readable runtime counts, kept
    paused: dict[str, int]  # readable pauses (job -> count it resumes to), kept
    applied: bool


@dataclass(frozen=True)
class Acquired:
    """A worker lock that was taken: the holder's token and the slot's fencing token."""

    token: str
    fence: int


@dataclass(frozen=True)
class MigrateResult:
    """What :meth:`Backend.migrate` did to a backend's tables."""

    outcome: Literal["created", "upgraded", "current"]
    schema: str
    database: str
    previous_version: int | None
    version: int
