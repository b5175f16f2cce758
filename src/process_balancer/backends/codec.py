"""Values as the backends store them: compact JSON, and decoding that reports bad data.

Anything read back from a backend may have been written by another version, another program
or a person; a value that does not decode is a :class:`CorruptStateError` naming where it was
found and what fixes it, never a crash deep inside the balancing logic.

:func:`decode_group` turns what a backend read for a snapshot into a :class:`GroupSnapshot`
the same way for every backend: strictly for balancing (an unreadable version, traits or info
stops the rebalance), leniently for ``status`` and ``repair`` (everything readable is kept and
each unreadable value becomes a :class:`Problem`).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from ..config.defaults import MAX_WORKERS_HARD_LIMIT
from .base import (
    REPAIR_HINT,
    SCALE_HINT,
    CorruptStateError,
    GroupSnapshot,
    MemberState,
    Partition,
    Problem,
)

logger = logging.getLogger(__name__)

#: Versions beyond this are refused: Lua numbers (Redis scripts) lose precision past it.
VERSION_LIMIT = 2**53
_DECIMAL = re.compile(r"-?[0-9]{1,19}")


def dumps(value: Any) -> str:
    """Compact JSON with sorted keys, so equal values are equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def shown(raw: Any) -> str:
    """A stored value as a message shows it: its repr, cut to 80 characters."""
    text = repr(raw)
    return text if len(text) <= 80 else text[:77] + "..."


def _whole(raw: Any) -> int | None:
    """An integer as stored: an int, an integral float, or a plain decimal string."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return int(raw) if raw.is_integer() and abs(raw) <= VERSION_LIMIT else None
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError:
            return None
    if isinstance(raw, str) and _DECIMAL.fullmatch(raw):
        return int(raw)
    return None


def version_value(raw: Any) -> int | None:
    """A stored state version, or None when it is not one."""
    value = _whole(raw)
    return value if value is not None and abs(value) <= VERSION_LIMIT else None


def count_value(raw: Any) -> int | None:
    """A stored worker count (0 to ``MAX_WORKERS_HARD_LIMIT``), or None when it is not one."""
    value = _whole(raw)
    return value if value is not None and 0 <= value <= MAX_WORKERS_HARD_LIMIT else None


def count_problem(raw: Any, where: str, part: str = "counts", item: str | None = None) -> Problem:
    return Problem(
        where,
        f"holds {shown(raw)}, not an integer from 0 to {MAX_WORKERS_HARD_LIMIT} (a worker count)",
        SCALE_HINT,
        part,
        item,
        raw,
    )


def integer(raw: Any, where: str) -> int:
    """A stored version; anything else is a CorruptStateError naming ``where``."""
    value = version_value(raw)
    if value is None:
        raise CorruptStateError(
            str(Problem(where, f"holds {shown(raw)}, expected an integer", REPAIR_HINT, "version"))
        )
    return value


def _dict(
    raw: Any, where: str, part: str, item: str | None
) -> tuple[dict[str, Any], Problem | None]:
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        detail = f"holds unreadable data {shown(raw)}"
        return {}, Problem(where, detail, REPAIR_HINT, part, item, raw)
    if not isinstance(value, dict):
        detail = f"holds {shown(raw)}, expected a JSON object"
        return {}, Problem(where, detail, REPAIR_HINT, part, item, raw)
    return value, None


def _slots(
    raw: Any, where: str, part: str, item: str | None
) -> tuple[dict[str, tuple[int, ...]], Problem | None]:
    data, problem = _dict(raw, where, part, item)
    if problem is not None:
        return {}, problem
    slots: dict[str, tuple[int, ...]] = {}
    for job_id, indexes in data.items():
        if not isinstance(indexes, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in indexes
        ):
            detail = f"lists {shown(indexes)} for job {job_id!r}"
            return {}, Problem(where, detail, REPAIR_HINT, part, item, raw)
        slots[job_id] = tuple(indexes)
    return slots, None


def loads_dict(raw: Any, where: str) -> dict[str, Any]:
    """A stored JSON object; anything else is a CorruptStateError naming ``where``."""
    value, problem = _dict(raw, where, "traits", None)
    if problem is not None:
        raise CorruptStateError(str(problem))
    return value


def parse_slots(raw: Any, where: str) -> dict[str, tuple[int, ...]]:
    """Stored slots ``{job: [index, ...]}``; anything else is a CorruptStateError."""
    slots, problem = _slots(raw, where, "assignment", None)
    if problem is not None:
        raise CorruptStateError(str(problem))
    return slots


def _partitions(raw: Any, where: str) -> tuple[dict[str, Partition], Problem | None]:
    data, problem = _dict(raw, where, "partitions", None)
    if problem is not None:
        return {}, problem
    partitions: dict[str, Partition] = {}
    for job_id, entry in data.items():
        count = generation = None
        if isinstance(entry, list) and len(entry) == 2:
            count, generation = count_value(entry[0]), version_value(entry[1])
        if count is None or generation is None or generation < 1 or isinstance(entry[1], str):
            detail = (
                f"gives {shown(entry)} for job {job_id!r}, not [count, generation] (an "
                f"integer from 0 to {MAX_WORKERS_HARD_LIMIT} and one from 1)"
            )
            return {}, Problem(where, detail, REPAIR_HINT, "partitions", None, raw)
        partitions[job_id] = Partition(count, generation)
    return partitions, None


def parse_partitions(raw: Any, where: str) -> dict[str, Partition]:
    """Stored partitions ``{job: [count, generation]}`` (None: none stored); anything else
    is a CorruptStateError naming ``where``."""
    if raw is None:
        return {}
    partitions, problem = _partitions(raw, where)
    if problem is not None:
        raise CorruptStateError(str(problem))
    return partitions


def heartbeat_partitions(raw: Any, where: str) -> dict[str, Partition] | None:
    """Stored partitions as a heartbeat returns them: None (logged once) when they cannot be
    read. They are derived state, rewritten with the next assignment, so a heartbeat does not
    fail on them: the caller asks the group for a new assignment (see the runtime's
    ``partitions_unreadable`` trait) and runs no partitioned slot until then."""
    try:
        return parse_partitions(raw, where)
    except CorruptStateError as exc:
        report_once(
            f"{exc}; no slot of a partitioned job starts until the group stores new ones, "
            "which the next assignment does (asked for now)"
        )
        return None


def dump_partitions(partitions: Any) -> str:
    """Partitions as stored: ``{job: [count, generation]}`` as compact JSON."""
    return dumps({job: [p.count, p.generation] for job, p in (partitions or {}).items()})


class _Once:
    """Log each problem once per process (until it changes), not at every rebalance."""

    def __init__(self, limit: int = 1000) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._limit = limit

    def __call__(self, problem: Problem | str) -> None:
        text = str(problem)
        with self._lock:
            if text in self._seen:
                return
            if len(self._seen) >= self._limit:
                self._seen.clear()
            self._seen.add(text)
        logger.error("%s", text)


#: Logs a problem the first time this process meets it.
report_once = _Once()


@dataclass
class RawMember:
    identity: str
    deadline: Any  # seconds since the epoch, as stored
    traits: Any
    info: Any
    where: str  # the member's key or row; traits and info are named under it
    where_traits: str
    where_info: str


@dataclass
class RawGroup:
    """What a backend read for one snapshot, undecoded, with where each value lives."""

    now: float
    version: tuple[str, Any]  # (where, stored value); None: never written (0)
    assignment_version: tuple[str, Any]
    members: list[RawMember] = field(default_factory=list)
    counts: list[tuple[str, Any, str]] = field(default_factory=list)  # job, value, where
    paused: list[tuple[str, Any, str]] = field(default_factory=list)
    assignment: list[tuple[str, Any, str]] = field(default_factory=list)  # identity, value, where
    unplaced: tuple[str, Any] = ("", None)
    #: (where, stored JSON ``{job: [count, generation]}``); None: never written
    partitions: tuple[str, Any] = ("", None)
    #: found while reading (a Redis key holding another type than expected)
    problems: list[Problem] = field(default_factory=list)


@dataclass
class Decoded:
    snapshot: GroupSnapshot
    paused: dict[str, int]
    problems: list[Problem]


def _version(entry: tuple[str, Any], part: str, problems: list[Problem]) -> int:
    where, raw = entry
    if raw is None:
        return 0
    value = version_value(raw)
    if value is None:
        problems.append(
            Problem(where, f"holds {shown(raw)}, expected an integer", REPAIR_HINT, part)
        )
        return 0
    return value


_SOFT_KEYS = ("counts", "paused", "assignment", "unplaced", "partitions")


def decode_group(raw: RawGroup, *, lenient: bool) -> Decoded:
    """The snapshot in ``raw``.

    Strict (``lenient=False``, for balancing): a membership or version key of another type, or
    an unreadable version, traits or info raises CorruptStateError naming every such value and
    ``process-balancer repair``. Counts, pauses, deadlines, the previous assignment and
    unplaced slots that cannot be read (a key of another type included) are left out and
    logged once: the balancer works without them and rewrites what it can. A job whose count
    cannot be read while it is paused stays at 0.

    Lenient (for ``status`` and ``repair``): nothing raises; every unreadable value is left out
    and returned as a problem.
    """
    # A counts or paused key of another type: each job runs its config count (a paused one,
    # whose count of 0 is then unknown too, included) until one is set again; assignment and
    # unplaced slots are computed afresh.
    hard = [p for p in raw.problems if p.part not in _SOFT_KEYS]
    soft = [p for p in raw.problems if p.part in _SOFT_KEYS]
    version = _version(raw.version, "version", hard)
    assignment_version = _version(raw.assignment_version, "assignment_version", hard)
    members: list[MemberState] = []
    for entry in raw.members:
        deadline = entry.deadline
        if isinstance(deadline, bool) or not isinstance(deadline, (int, float)):
            soft.append(
                Problem(
                    entry.where,
                    f"has the deadline {shown(deadline)}, not a time; the member is left out",
                    REPAIR_HINT,
                    "members",
                    entry.identity,
                    deadline,
                )
            )
            continue
        traits, problem = _dict(entry.traits, entry.where_traits, "traits", entry.identity)
        if problem is not None:
            hard.append(problem)
        info, problem = _dict(entry.info, entry.where_info, "info", entry.identity)
        if problem is not None:
            hard.append(problem)
        members.append(MemberState(entry.identity, float(deadline), traits, info))
    paused: dict[str, int] = {}
    for job_id, value, where in raw.paused:
        count = count_value(value)
        if count is None:
            soft.append(count_problem(value, where, "paused", job_id))
        else:
            paused[job_id] = count
    paused_jobs = {job_id for job_id, _, _ in raw.paused}
    counts: dict[str, int] = {}
    for job_id, value, where in raw.counts:
        count = count_value(value)
        if count is None:
            soft.append(count_problem(value, where, "counts", job_id))
            if job_id in paused_jobs:
                counts[job_id] = 0
        else:
            counts[job_id] = count
    assignment: dict[str, dict[str, list[int]]] = {}
    for identity, value, where in raw.assignment:
        slots, problem = _slots(value, where, "assignment", identity)
        if problem is not None:
            soft.append(problem)
        else:
            assignment[identity] = {job: list(indexes) for job, indexes in slots.items()}
    unplaced_where, unplaced_raw = raw.unplaced
    unplaced: dict[str, list[int]] = {}
    if unplaced_raw is not None:
        parsed, problem = _slots(unplaced_raw, unplaced_where, "unplaced", None)
        if problem is not None:
            soft.append(problem)
        unplaced = {job: list(indexes) for job, indexes in parsed.items()}
    partitions_where, partitions_raw = raw.partitions
    partitions: dict[str, Partition] = {}
    if partitions_raw is not None:
        partitions, problem = _partitions(partitions_raw, partitions_where)
        if problem is not None:
            soft.append(problem)
    if not lenient:
        if hard:
            raise CorruptStateError(_joined(hard))
        for problem in soft:
            report_once(problem)
    snapshot = GroupSnapshot(
        version=version,
        assignment_version=assignment_version,
        members=members,
        counts=counts,
        assignment=assignment,
        unplaced=unplaced,
        now=raw.now,
        partitions=partitions,
    )
    return Decoded(snapshot, paused, hard + soft)


def _joined(problems: list[Problem]) -> str:
    """Several problems as one message: each place and what it holds, then the fix once."""
    fixes = list(dict.fromkeys(p.fix for p in problems))
    parts = "; ".join(f"{p.where} {p.detail}" for p in problems)
    return f"{parts}; {'; '.join(fixes)}"


def corrupt(problems: list[Problem]) -> CorruptStateError:
    """One CorruptStateError for ``problems`` (not empty)."""
    return CorruptStateError(_joined(problems))
