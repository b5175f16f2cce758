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
  the others the same way. Jobs are placed in job id order, each using up capacity.
- A job's placement rule (``placement.py``) narrows who may run it (required tags) and who runs
  it first (preferred tags); its weight sends the spare slots of the rounding to the processes
  with the least weighted load, so heavy slots do not pile up on one process.
- No slot stays unplaced while it could be placed: when the proportional rule leaves one
  unplaced because earlier jobs took the room on the only processes allowed to run it, slots
  of those jobs move, along shortest augmenting paths of the flow network (``flow.py``), to
  processes they may use. The result places the most slots any assignment can; under a real
  shortage the first job ids win.
- Every moved slot costs a worker stop, a lock hand-over and a worker start, so the result is
  sticky: a process keeps the indexes it held (its lowest ones when it must give some up), a
  spare slot of the rounding goes first to a process already running it, and only released or
  new indexes are handed out, lowest first. A join then moves only what the newcomer needs, a
  leave only what the leaver held, and feeding a result back in changes nothing. For the same
  reason the unplaced indexes are the highest ones nobody keeps, not always the highest ones:
  renumbering would stop running workers only to start idle ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from itertools import islice, pairwise
from typing import Any

from .flow import Plan
from .member import Member
from .placement import ANYWHERE, JobPlacement, tiers
from .spread import targets

__all__ = ["Assignment", "JobPlacement", "Member", "Previous", "assign", "moves"]

#: A previous assignment as stored: identity -> job id -> worker indexes. It may name processes
#: and jobs that are gone, indexes past the current count, and one index under several members.
Previous = Mapping[str, Mapping[str, Sequence[int]]]


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
    placement: Mapping[str, JobPlacement] | None = None,
) -> Assignment:
    """Spread each job's worker slots ``0..counts[job]-1`` over the members.

    ``previous`` is the last assignment (the mapping stored in the backend, or an
    :class:`Assignment`); slots stay where they were as far as balance allows. ``placement``
    maps job ids to their :class:`JobPlacement` (required and preferred tags, weight); a job
    without one may run on any member that runs it. Raises ``ValueError`` for a negative or
    non-integer count or capacity, a weight that is not positive and a repeated identity.
    """
    roster = _checked_members(members)
    jobs = [(job_id, count) for job_id, count in _checked_counts(counts) if count > 0]
    rules = {job_id: (placement or {}).get(job_id, ANYWHERE) for job_id, _ in jobs}
    weights = _integer_weights(rules)
    eligible = {
        job_id: [m for m in roster if m.capacity > 0 and rules[job_id].admits(m, job_id)]
        for job_id, _ in jobs
    }
    held = _holdings(previous)
    kept = {
        job_id: _kept_indexes(eligible[job_id], held.get(job_id, ()), count)
        for job_id, count in jobs
    }

    def plan(steer: Mapping[str, Mapping[str, list[int]]], repair: bool) -> tuple[Plan, bool]:
        """The slot counts, the spare slots of the rounding steered to what ``steer`` holds;
        with ``repair``, mended by augmenting paths (and whether any was needed)."""
        result = Plan(roster, eligible, rules, weights)
        repaired = False
        for job_id, count in jobs:
            left = count
            for tier in tiers(eligible[job_id], rules[job_id]):
                given = targets(
                    tier, result.room, steer.get(job_id, {}), left, result.load, weights[job_id]
                )
                for identity, target in given.items():
                    if target:
                        result.add(job_id, identity, target)
                        left -= target
                if not left:
                    break
            if left and repair and result.augment(job_id, left):
                repaired = True
        return result, repaired

    # The counts come from the current state alone whenever a repair is needed, and are
    # steered by the previous holdings only when the proportional rule places as much by
    # itself: either way, feeding the result back in yields the same counts, and the indexes
    # below stay with their holders. When every process that runs anything may run every
    # job, no repair can help and each job's total does not depend on the steering, so the
    # steered plan is the answer at once. See docs/design.md, "Placement".
    capable = {member.identity for of_job in eligible.values() for member in of_job}
    if all(len(of_job) == len(capable) for of_job in eligible.values()):
        counts_plan, _ = plan(kept, repair=False)
    else:
        counts_plan, repaired = plan({}, repair=True)
        if previous is not None and not repaired:
            sticky, _ = plan(kept, repair=False)
            if all(sticky.placed(job_id) == counts_plan.placed(job_id) for job_id, _ in jobs):
                counts_plan = sticky
    slots: dict[str, dict[str, tuple[int, ...]]] = {}
    unplaced: dict[str, tuple[int, ...]] = {}
    for job_id, count in jobs:
        placed, unplaced_indexes = _place(counts_plan.units.get(job_id, {}), kept[job_id], count)
        for identity, indexes in placed.items():
            slots.setdefault(identity, {})[job_id] = indexes
        if unplaced_indexes:
            unplaced[job_id] = unplaced_indexes
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


def _integer_weights(rules: Mapping[str, JobPlacement]) -> dict[str, int]:
    """Each job's weight as an integer in one common unit, so loads add up exactly."""
    for job_id, rule in rules.items():
        weight = rule.weight
        if not isinstance(weight, (int, Fraction)) or isinstance(weight, bool) or weight <= 0:
            raise ValueError(f"job {job_id!r}: weight must be a positive number, got {weight!r}")
    unit = math.lcm(*(Fraction(rule.weight).denominator for rule in rules.values()))
    return {job_id: int(rule.weight * unit) for job_id, rule in rules.items()}


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
