"""Group-level balancing: from a backend snapshot to the stored assignment."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from fractions import Fraction
from typing import TypeGuard

from ..backends.base import SCALE_HINT, Backend, GroupSnapshot, MemberState, Partition
from ..backends.codec import report_once, shown
from ..config.defaults import MAX_WORKERS_HARD_LIMIT
from .assign import Assignment, Member, assign
from .placement import ANYWHERE, JobPlacement, unplaced_reason

logger = logging.getLogger(__name__)


def _strings(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def member_from_state(state: MemberState, *, report: bool = True) -> Member:
    """The assignment's view of one member; unreadable traits make it get nothing.

    A member without ``tags`` (a process of a version before tags) has none. ``report``
    False keeps a reader (``status``) from logging what the processes already log.
    """
    traits = state.traits
    capacity = traits.get("capacity")
    jobs = traits.get("jobs")
    tags = traits.get("tags", [])
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0:
        if report:
            logger.error(
                "member %s advertises capacity %r; it gets no slots", state.identity, capacity
            )
        capacity = 0
    if not _strings(jobs):
        if report:
            logger.error("member %s advertises jobs %r; it gets no slots", state.identity, jobs)
        jobs = []
    if not _strings(tags):
        if report:
            logger.error(
                "member %s advertises tags %r; it counts as untagged", state.identity, tags
            )
        tags = []
    return Member(
        identity=state.identity,
        capacity=capacity,
        active=bool(traits.get("active", False)),
        jobs=frozenset(jobs),
        tags=frozenset(tags),
    )


def _rule(job_id: str, identity: str, entry: object) -> JobPlacement:
    """One advertised placement rule; anything unreadable reads as no rule, reported once."""
    if isinstance(entry, Mapping):
        require = entry.get("require", [])
        prefer = entry.get("prefer", [])
        weight = entry.get("weight", 1)
        if (
            _strings(require)
            and _strings(prefer)
            and isinstance(weight, (int, float))
            and not isinstance(weight, bool)
            and math.isfinite(weight)
            and weight > 0
        ):
            return JobPlacement(frozenset(require), frozenset(prefer), Fraction(str(weight)))
    report_once(
        f"member {identity} advertises the placement of job {job_id!r} as {shown(entry)}, not "
        "{require: [tags], prefer: [tags], weight: number > 0}; the job is placed without a "
        "rule until that process restarts with a valid config"
    )
    return ANYWHERE


def job_placements(members: list[MemberState]) -> dict[str, JobPlacement]:
    """Each job's placement rule, as advertised by the oldest member that runs the job.

    As with :func:`config_counts`, members may carry different configs during a rolling
    deploy, and the oldest one's view makes every process place slots alike. A member of a
    version without placement rules (no ``placement`` trait) has no view and is skipped; a job
    whose deciding member names no rule may run anywhere it is configured.
    """
    rules: dict[str, JobPlacement] = {}
    decided: set[str] = set()
    for member in sorted(members, key=lambda m: (_started_at(m), m.identity)):
        advertised = member.traits.get("placement")
        jobs = member.traits.get("jobs")
        if not isinstance(advertised, Mapping) or not _strings(jobs):
            continue
        for job_id in sorted(jobs):
            if job_id in decided:
                continue
            decided.add(job_id)
            if job_id in advertised:
                rules[job_id] = _rule(job_id, member.identity, advertised[job_id])
    return rules


def _started_at(member: MemberState) -> float:
    value = member.traits.get("started_at")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def config_counts(members: list[MemberState]) -> dict[str, int]:
    """Each job's config ``workers``, as advertised by the oldest member that runs the job.

    During a rolling deploy members may carry different configs; taking the oldest member's
    value makes every process pick the same one.
    """
    counts: dict[str, int] = {}
    ordered = sorted(members, key=lambda m: (_started_at(m), m.identity))
    for member in ordered:
        advertised = member.traits.get("defaults")
        if not isinstance(advertised, Mapping):
            continue
        for job_id, count in advertised.items():
            if _is_count(count):
                counts.setdefault(job_id, count)
    return counts


def _is_count(value: object) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and 0 <= value <= MAX_WORKERS_HARD_LIMIT
    )


def effective_counts(snapshot: GroupSnapshot) -> dict[str, int]:
    """Scheduled workers per job: the runtime count, else the config's.

    A runtime count that is negative, not an integer or above ``MAX_WORKERS_HARD_LIMIT`` was
    not written by this program: it is ignored (the config's count applies) and logged once.
    """
    counts = config_counts(snapshot.members)
    for job_id in counts:
        if job_id not in snapshot.counts:
            continue
        count = snapshot.counts[job_id]
        if _is_count(count):
            counts[job_id] = count
        else:
            report_once(
                f"the runtime worker count of job {job_id!r} is {shown(count)}, not an integer "
                f"from 0 to {MAX_WORKERS_HARD_LIMIT}; the config's count {counts[job_id]} is "
                f"used instead; {SCALE_HINT}"
            )
    return counts


def compute(
    snapshot: GroupSnapshot,
    members: list[Member] | None = None,
    counts: Mapping[str, int] | None = None,
    rules: Mapping[str, JobPlacement] | None = None,
) -> Assignment:
    """The assignment for ``snapshot``; ``members``, ``counts`` and ``rules`` are what it is
    computed from, when the caller has them already."""
    if members is None:
        members = [member_from_state(m) for m in snapshot.members]
    return assign(
        members,
        effective_counts(snapshot) if counts is None else counts,
        previous=snapshot.assignment,
        placement=job_placements(snapshot.members) if rules is None else rules,
    )


def next_partitions(snapshot: GroupSnapshot, counts: Mapping[str, int]) -> dict[str, Partition]:
    """Each job's count and generation for the next assignment: the stored generation while
    the count is unchanged, the next one when it changed. A job met for the first time (or
    after its stored entry was lost) starts past every generation it may have had: at the
    backend's clock in milliseconds, so no process mistakes a new generation for an old one.
    Jobs no member counts any more keep their entry, so a job that comes back goes on from
    its last generation."""
    stored = snapshot.partitions
    start = int(snapshot.now * 1000) if snapshot.now is not None else 1
    result = dict(stored)
    for job_id, count in sorted(counts.items()):
        previous = stored.get(job_id)
        if previous is None:
            result[job_id] = Partition(count, max(1, start))
        elif previous.count != count:
            result[job_id] = Partition(count, previous.generation + 1)
    return result


def rebalance(backend: Backend) -> tuple[int, Assignment, dict[str, Partition]] | None:
    """Store the assignment for the current state if none is stored for it yet.

    Returns (version, assignment, partitions) when this call wrote it, None when it was
    current already or another process wrote it first (both compute the same result from
    the same state).
    """
    snapshot = backend.snapshot()
    if snapshot.version == snapshot.assignment_version:
        return None
    members = [member_from_state(m) for m in snapshot.members]
    counts = effective_counts(snapshot)
    rules = job_placements(snapshot.members)
    result = compute(snapshot, members, counts, rules)
    partitions = next_partitions(snapshot, counts)
    if not backend.write_assignment(snapshot.version, result.slots, result.unplaced, partitions):
        return None
    for job_id, partition in sorted(partitions.items()):
        before = snapshot.partitions.get(job_id)
        if before is not None and before != partition:
            logger.info(
                "job %s: count %d -> %d, generation %d",
                job_id,
                before.count,
                partition.count,
                partition.generation,
            )
    for job_id, indexes in sorted(result.unplaced.items()):
        reason = unplaced_reason(job_id, members, rules.get(job_id, ANYWHERE))
        if reason.code in ("no_process", "not_active"):
            # The group is stopping or quiet, or the job is in nobody's config yet.
            logger.info("job %s: %d slot(s) wait: %s", job_id, len(indexes), reason.message)
            continue
        logger.warning(
            "job %s: %d slot(s) %s cannot be placed: %s",
            job_id,
            len(indexes),
            list(indexes),
            reason.message,
        )
    return snapshot.version, result, partitions
