"""Where a job's slots may run: process tags, a job's placement rule, and why a slot is unplaced.

A process declares tags (``tags: [gpu, eu-west]``, ``run --tag``). A job may *require* tags:
only a process holding every one of them may run its slots. It may *prefer* tags: its slots
go to the processes holding the most of them first and spill over to the others only when
those are full. A job's *weight* says what one of its slots costs compared with a slot of
another job; it decides where the spare slots of the proportional rule go, so heavy slots
do not pile up on one process. Capacity (``max_threads``) still counts slots, not weight:
a worker thread is a worker thread, whatever its job does with it.

Everything here is a pure function of the members and the rules, so a status reader can
recompute why a slot is unplaced from the same snapshot the assignment was computed from,
and no backend has to store the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from .member import Member

__all__ = ["ANYWHERE", "JobPlacement", "UnplacedReason", "tiers", "unplaced_reason"]


@dataclass(frozen=True)
class JobPlacement:
    """One job's placement rule: tags a process must have, tags it should have, slot weight."""

    require: frozenset[str] = frozenset()
    prefer: frozenset[str] = frozenset()
    #: The cost of one slot of this job relative to others, for spreading; positive.
    weight: Fraction = Fraction(1)

    def admits(self, member: Member, job_id: str) -> bool:
        """Whether ``member`` may be given slots of ``job_id`` under this rule."""
        return member.can_run(job_id) and self.require <= member.tags

    def preference(self, member: Member) -> int:
        """How many of the preferred tags ``member`` has: higher is filled first."""
        return len(self.prefer & member.tags)


#: The rule of a job that names none: any process that runs the job, weight 1.
ANYWHERE = JobPlacement()


def tiers(eligible: Sequence[Member], rule: JobPlacement) -> list[list[Member]]:
    """``eligible`` split by preference, most preferred tier first, each in input order."""
    if not rule.prefer:
        return [list(eligible)] if eligible else []
    by_score: dict[int, list[Member]] = {}
    for member in eligible:
        by_score.setdefault(rule.preference(member), []).append(member)
    return [by_score[score] for score in sorted(by_score, reverse=True)]


@dataclass(frozen=True)
class UnplacedReason:
    """Why a job's slots fit nowhere: a stable ``code`` for scripts, a ``message`` for people.

    Codes: ``no_process`` (no live process has the job in its config), ``not_active`` (every
    process that has it is quiet or stopping), ``no_tags`` (none of those has the required
    tags), ``no_capacity`` (the processes that may run it are full).
    """

    code: str
    message: str


def _tag_list(tags: Iterable[str]) -> str:
    return ", ".join(sorted(tags))


def unplaced_reason(
    job_id: str, members: Iterable[Member], rule: JobPlacement = ANYWHERE
) -> UnplacedReason:
    """Why slots of ``job_id`` are unplaced among ``members`` under ``rule``.

    Meant for a job the assignment left slots of unplaced: when some process could run it,
    the reason is that those processes are full.
    """
    members = list(members)
    runs = [m for m in members if m.jobs is None or job_id in m.jobs]
    if not runs:
        return UnplacedReason(
            "no_process", "no live process runs this job (none has it in its config)"
        )
    active = [m for m in runs if m.active]
    if not active:
        return UnplacedReason(
            "not_active", "every live process that runs this job is quiet or stopping"
        )
    required = _tag_list(rule.require)
    tags_word = "tags" if len(rule.require) > 1 else "tag"
    eligible = [m for m in active if rule.require <= m.tags]
    if not eligible:
        if not any(rule.require <= m.tags for m in members):
            what = f"{tags_word} {required}" if len(rule.require) == 1 else f"all of {required}"
            message = f"no live process has {what}"
        else:
            message = f"no live, non-quiet process that runs this job has {tags_word} {required}"
        return UnplacedReason(
            "no_tags", f"{message}; start one with `run --tag` or `tags:` in its config"
        )
    capacity = sum(m.capacity for m in eligible)
    with_tags = f" with {tags_word} {required}" if rule.require else ""
    if len(eligible) == 1:
        slots = "1 slot" if capacity == 1 else f"{capacity} slots"
        who = f"the only live process{with_tags} that can run it is full ({slots}"
    else:
        who = (
            f"the {len(eligible)} live processes{with_tags} that can run it are full "
            f"({capacity} slots in all"
        )
    return UnplacedReason(
        "no_capacity",
        f"no spare capacity: {who}, max_threads); start more processes{with_tags}, raise "
        "max_threads or lower the count",
    )
