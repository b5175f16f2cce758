"""Which process runs which worker index of which job: a pure function, no I/O.

Every process of a group evaluates :func:`assign` on the same shared snapshot and acts on its own
part of the answer without asking its peers, so the answer must depend on the snapshot only:
members, jobs and previous holdings are visited in sorted order and every tie is broken by
identity, never by input order. Two processes that read the same snapshot therefore agree on
every owner, and no slot flaps or goes unowned because of who computed it.

The rules, and why they are the rules:

- A process never gets more slots than its ``capacity`` (``max_threads``) over all jobs. The
  original started the extra workers anyway and starved them silently; here what fits nowhere is
  reported as *unplaced*, so an operator sees it and adding a process fixes it.
- A quiet or stopping process gets nothing, so its slots move to peers at once instead of
  stalling until it exits.
- Each job's slots are spread in proportion to capacity by largest remainder, so every process
  gets the floor or the ceiling of its exact share and equal processes differ by at most one. A
  process whose remaining capacity is below its share gets what fits and the rest is spread over
  the others the same way, so nothing stays unplaced while an eligible process has room. Jobs
  are placed in job id order, each using up capacity: under a shortage, the first ids win.
- Every moved slot costs a worker stop, a lock hand-over and a worker start, so the result is
  sticky: a process keeps the indexes it held (its lowest ones when it must give some up), a
  spare slot of the rounding goes first to a process already running it, and only released or
  new indexes are handed out, lowest first. A join then moves only what the newcomer needs, a
  leave only what the leaver held, and feeding a result back in changes nothing. For the same
  reason the unplaced indexes are the highest ones nobody keeps, not always the highest ones:
  renumbering would stop running workers only to start idle ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from itertools import islice, pairwise
from typing import Any

__all__ = ["Assignment", "Member", "Previous", "assign", "moves"]

#: A previous assignment as stored: identity -> job id -> worker indexes. It may name processes
#: and jobs that are gone, indexes past the current count, and one index under several members.
Previous = Mapping[str, Mapping[str, Sequence[int]]]


@dataclass(frozen=True)
class Member:
    """One live process of the group, as the assignment sees it."""

    #: Unique process identity, ``host:pid:nonce``.
    identity: str
    #: The process's ``max_threads``: the most slots it may run over all jobs together.
    capacity: int
    #: False while the process is quiet or stopping: it then gets no slot at all.
    active: bool = True
    #: Job ids this process can run (those in its config); None means any job.
    jobs: frozenset[str] | None = None

    def can_run(self, job_id: str) -> bool:
        """Whether this member may be given slots of ``job_id``."""
        return self.active and (self.jobs is None or job_id in self.jobs)


@dataclass(frozen=True)
class Assignment:
    """The owner of every worker slot, and the slots no process had room for.

    ``slots`` maps identity -> job id -> sorted indexes and holds only non-empty entries: a
    member that got nothing is absent. ``unplaced`` maps job id -> sorted indexes.
    """

    slots: Mapping[str, Mapping[str, tuple[int, ...]]] = field(default_factory=dict)
    unplaced: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def for_member(self, identity: str) -> dict[str, tuple[int, ...]]:
        """The slots of one process: job id -> indexes (empty when it has none)."""
        return dict(self.slots.get(identity, {}))

    def owner(self, job_id: str, index: int) -> str | None:
        """The identity that runs ``index`` of ``job_id``, or None when nobody does."""
        return self._owners.get((job_id, index))

    @cached_property
    def _owners(self) -> dict[tuple[str, int], str]:
        return {
            (job_id, index): identity
            for identity, per_job in self.slots.items()
            for job_id, indexes in per_job.items()
            for index in indexes
        }

    def to_json(self) -> dict[str, Any]:
        """Plain dicts and lists, for a backend to store; :meth:`from_json` reads it back."""
        return {
            "slots": {
                identity: {job_id: list(indexes) for job_id, indexes in per_job.items()}
                for identity, per_job in self.slots.items()
            },
            "unplaced": {job_id: list(indexes) for job_id, indexes in self.unplaced.items()},
        }

    @classmethod
    def from_json(cls, data: Any) -> Assignment:
        """Read what :meth:`to_json` wrote; anything else raises ``ValueError``.

        The data comes from a shared backend, so a corrupt value is refused outright rather
        than half-trusted: acting on it could run one slot on two processes.
        """
        if not isinstance(data, Mapping) or set(data) != {"slots", "unplaced"}:
            raise ValueError("an assignment needs exactly the keys 'slots' and 'unplaced'")
        seen: set[tuple[str, int]] = set()
        slots: dict[str, dict[str, tuple[int, ...]]] = {}
        for identity, per_job in sorted(_checked_mapping(data["slots"], "slots").items()):
            where = f"slots[{identity!r}]"
            per_job = _checked_mapping(per_job, where)
            if not per_job:
                raise ValueError(f"assignment {where} is empty; a member without slots is left out")
            slots[identity] = {
                job_id: _checked_indexes(job_id, indexes, seen, f"{where}[{job_id!r}]")
                for job_id, indexes in sorted(per_job.items())
            }
        unplaced = {
            job_id: _checked_indexes(job_id, indexes, seen, f"unplaced[{job_id!r}]")
            for job_id, indexes in sorted(_checked_mapping(data["unplaced"], "unplaced").items())
        }
        return cls(slots=slots, unplaced=unplaced)


def assign(
    members: Iterable[Member],
    counts: Mapping[str, int],
    previous: Previous | Assignment | None = None,
) -> Assignment:
    """Spread each job's worker slots ``0..counts[job]-1`` over the members.

    ``previous`` is the last assignment (the mapping stored in the backend, or an
    :class:`Assignment`); slots stay where they were as far as balance allows. Raises
    ``ValueError`` for a negative or non-integer count or capacity and for a repeated identity.
    """
    roster = _checked_members(members)
    held = _holdings(previous)
    room = {member.identity: member.capacity for member in roster}
    slots: dict[str, dict[str, tuple[int, ...]]] = {}
    unplaced: dict[str, tuple[int, ...]] = {}
    for job_id, count in _checked_counts(counts):
        eligible = [member for member in roster if member.can_run(job_id)]
        kept = _kept_indexes(eligible, held.get(job_id, ()), count)
        targets = _targets(eligible, room, kept, count)
        placed, left = _place(targets, kept, count)
        for identity, indexes in placed.items():
            room[identity] -= len(indexes)
            slots.setdefault(identity, {})[job_id] = indexes
        if left:
            unplaced[job_id] = left
    return Assignment(
        slots={identity: slots[identity] for identity in sorted(slots)}, unplaced=unplaced
    )


def moves(before: Previous | Assignment, after: Previous | Assignment) -> int:
    """How many slots had an owner in ``before`` and another owner, or none, in ``after``.

    Only slots present in both count. A slot is present in an :class:`Assignment` when it is
    placed or unplaced, and in a plain mapping when some member lists it.
    """
    old = _owner_map(before)
    new = _owner_map(after)
    return sum(
        1 for slot, owner in old.items() if owner is not None and slot in new and new[slot] != owner
    )


# -- validation ---------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_members(members: Iterable[Member]) -> list[Member]:
    roster = sorted(members, key=lambda member: member.identity)
    for member, following in pairwise(roster):
        if member.identity == following.identity:
            raise ValueError(f"member {member.identity!r} is listed twice")
    for member in roster:
        if not _is_int(member.capacity) or member.capacity < 0:
            raise ValueError(
                f"member {member.identity!r}: capacity must be an integer >= 0,"
                f" got {member.capacity!r}"
            )
    return roster


def _checked_counts(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    checked = sorted(counts.items())
    for job_id, count in checked:
        if not _is_int(count) or count < 0:
            raise ValueError(f"job {job_id!r}: worker count must be an integer >= 0, got {count!r}")
    return checked


def _checked_mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise ValueError(f"assignment {where} must be an object with string keys")
    return value


def _checked_indexes(
    job_id: str, indexes: Any, seen: set[tuple[str, int]], where: str
) -> tuple[int, ...]:
    if not isinstance(indexes, list) or not indexes:
        raise ValueError(f"assignment {where} must be a non-empty list of indexes")
    for index in indexes:
        if not _is_int(index) or index < 0:
            raise ValueError(f"assignment {where} holds {index!r}, not an index >= 0")
        if (job_id, index) in seen:
            raise ValueError(f"assignment {where}: index {index} of job {job_id!r} is given twice")
        seen.add((job_id, index))
    return tuple(sorted(indexes))


# -- the assignment steps -----------------------------------------------------------------------


def _holdings(previous: Previous | Assignment | None) -> dict[str, list[tuple[str, Sequence[int]]]]:
    """Regroup the previous assignment by job: job id -> [(identity, indexes)] by identity."""
    if previous is None:
        return {}
    mapping = previous.slots if isinstance(previous, Assignment) else previous
    by_job: dict[str, list[tuple[str, Sequence[int]]]] = {}
    for identity in sorted(mapping):
        for job_id, indexes in mapping[identity].items():
            by_job.setdefault(job_id, []).append((identity, indexes))
    return by_job


def _kept_indexes(
    eligible: list[Member], holdings: Sequence[tuple[str, Sequence[int]]], count: int
) -> dict[str, list[int]]:
    """The previous indexes each eligible member may keep, sorted, before any cut to target.

    An index past the count, or held by a member that is gone or no longer eligible, is dropped;
    an index listed under several eligible members stays with the first by identity.
    """
    can_keep = {member.identity for member in eligible if member.capacity > 0}
    claimed: set[int] = set()
    kept: dict[str, list[int]] = {}
    for identity, indexes in holdings:
        if identity not in can_keep:
            continue
        own = {index for index in indexes if _is_int(index) and 0 <= index < count} - claimed
        if own:
            claimed |= own
            kept[identity] = sorted(own)
    return kept


def _targets(
    eligible: list[Member], room: Mapping[str, int], kept: Mapping[str, list[int]], count: int
) -> dict[str, int]:
    """How many slots of this job each eligible member gets (water-filling by capacity)."""
    open_members = [m for m in eligible if m.capacity > 0 and room[m.identity] > 0]
    remaining = count
    weight = sum(member.capacity for member in open_members)
    targets: dict[str, int] = {}

    def short(member: Member) -> bool:
        # Its exact share remaining * capacity / weight is more than it has room for.
        return room[member.identity] * weight < remaining * member.capacity

    if remaining and any(short(member) for member in open_members):
        # Fill the tightest members first: each one filled only raises the share of the rest,
        # so once a member has room for its share, every later one has too.
        open_members.sort(key=lambda m: Fraction(room[m.identity], m.capacity))
        filled = 0
        while filled < len(open_members) and short(open_members[filled]):
            member = open_members[filled]
            targets[member.identity] = room[member.identity]
            remaining -= room[member.identity]
            weight -= member.capacity
            filled += 1
        open_members = open_members[filled:]
    if not remaining or not open_members:
        return targets

    floors = [remaining * member.capacity // weight for member in open_members]
    leftover = remaining - sum(floors)

    def rank(position: int) -> tuple[bool, bool, int, int, str]:
        # A spare slot goes to a fractional share only, so every member stays within floor and
        # ceil of its exact share. Among those, members already running more than their floor
        # come first: any other choice would stop one of their workers to start one elsewhere.
        # Then the largest remainder, then the most held, then identity.
        member = open_members[position]
        remainder = remaining * member.capacity % weight
        surplus = len(kept.get(member.identity, ())) - floors[position]
        return (remainder == 0, surplus <= 0, -remainder, -surplus, member.identity)

    for position in sorted(range(len(open_members)), key=rank)[:leftover]:
        floors[position] += 1
    for member, target in zip(open_members, floors, strict=True):
        targets[member.identity] = target
    return targets


def _place(
    targets: Mapping[str, int], kept: Mapping[str, list[int]], count: int
) -> tuple[dict[str, tuple[int, ...]], tuple[int, ...]]:
    """Turn targets into indexes: keep held ones, hand out the rest lowest first.

    The Python-level work is bounded by the slots placed, not by ``count``: the unplaced
    indexes, which can be most of a count at the hard limit, are built from ranges.
    """
    taken: set[int] = set()
    placed: dict[str, list[int]] = {}
    for identity, target in targets.items():
        own = kept.get(identity, [])[:target]
        taken.update(own)
        placed[identity] = own
    short = sorted(
        ((target - len(placed[identity]), identity) for identity, target in targets.items()),
        key=lambda item: (-item[0], item[1]),
    )
    wanted = sum(deficit for deficit, _ in short if deficit > 0)
    handed: list[int] = []
    scanned = 0
    while len(handed) < wanted and scanned < count:
        if scanned not in taken:
            handed.append(scanned)
        scanned += 1
    free = iter(handed)
    for deficit, identity in short:
        if deficit > 0:
            placed[identity] = placed[identity] + list(islice(free, deficit))
    left: list[int] = []
    start = scanned
    for index in sorted(index for index in taken if index >= scanned):
        left.extend(range(start, index))
        start = index + 1
    left.extend(range(start, count))
    result = {identity: tuple(sorted(placed[identity])) for identity in sorted(placed)}
    return {identity: indexes for identity, indexes in result.items() if indexes}, tuple(left)


def _owner_map(assignment: Previous | Assignment) -> dict[tuple[str, int], str | None]:
    owners: dict[tuple[str, int], str | None] = {}
    if isinstance(assignment, Assignment):
        for job_id, left in assignment.unplaced.items():
            owners.update(((job_id, index), None) for index in left)
        owners.update(assignment._owners)
        return owners
    for identity in sorted(assignment):
        for job_id, indexes in assignment[identity].items():
            for index in indexes:
                owners.setdefault((job_id, index), identity)
    return owners
