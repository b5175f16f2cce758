"""Group-level balancing: from a backend snapshot to the stored assignment."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..backends.base import SCALE_HINT, Backend, GroupSnapshot, MemberState
from ..backends.codec import report_once, shown
from ..config.defaults import MAX_WORKERS_HARD_LIMIT
from .assign import Assignment, Member, assign

logger = logging.getLogger(__name__)


def member_from_state(state: MemberState) -> Member:
    """The assignment's view of one member; unreadable traits make it get nothing."""
    traits = state.traits
    capacity = traits.get("capacity")
    jobs = traits.get("jobs")
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0:
        logger.error("member %s advertises capacity %r; it gets no slots", state.identity, capacity)
        capacity = 0
    if not isinstance(jobs, list) or not all(isinstance(j, str) for j in jobs):
        logger.error("member %s advertises jobs %r; it gets no slots", state.identity, jobs)
        jobs = []
    return Member(
        identity=state.identity,
        capacity=capacity,
        active=bool(traits.get("active", False)),
        jobs=frozenset(jobs),
    )


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


def compute(snapshot: GroupSnapshot, members: list[Member] | None = None) -> Assignment:
    if members is None:
        members = [member_from_state(m) for m in snapshot.members]
    return assign(members, effective_counts(snapshot), previous=snapshot.assignment)


def rebalance(backend: Backend) -> tuple[int, Assignment] | None:
    """Store the assignment for the current state if none is stored for it yet.

    Returns (version, assignment) when this call wrote it, None when it was current already
    or another process wrote it first (both compute the same result from the same state).
    """
    snapshot = backend.snapshot()
    if snapshot.version == snapshot.assignment_version:
        return None
    members = [member_from_state(m) for m in snapshot.members]
    result = compute(snapshot, members)
    if not backend.write_assignment(snapshot.version, result.slots, result.unplaced):
        return None
    for job_id, indexes in sorted(result.unplaced.items()):
        if not any(member.can_run(job_id) for member in members):
            # Nobody can run the job at all: the group is stopping, or every process is quiet.
            logger.info(
                "job %s: no live, non-quiet process runs this job; its %d slot(s) wait for one",
                job_id,
                len(indexes),
            )
            continue
        logger.warning(
            "job %s: %d slot(s) %s cannot be placed: the live, non-quiet processes running "
            "this job have no spare capacity (max_threads); start more processes, raise "
            "max_threads or lower the count",
            job_id,
            len(indexes),
            list(indexes),
        )
    return snapshot.version, result
