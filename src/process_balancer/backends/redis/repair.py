"""What ``process-balancer repair`` changes in a Redis group, worked out from a lenient read.

The plan lists the operations repair.lua applies atomically; each removes a value only if it
still holds what was read, so a process that rewrote it meanwhile keeps what it wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..base import Problem
from ..codec import Decoded


@dataclass
class RepairPlan:
    keys: list[str]
    ops: list[tuple[str, str, str, str]] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)

    def key_index(self, key: str) -> str:
        if key not in self.keys:
            self.keys.append(key)
        return str(self.keys.index(key) + 1)

    def args(self) -> list[str]:
        return [value for op in self.ops for value in op]


def _wrong_type(problem: Problem) -> bool:
    return problem.item is None and problem.detail.startswith("is a ")


def plan_repair(
    keys: list[str],
    key: Callable[[str], str],
    decoded: Decoded,
    stray: list[Problem],
    holders: dict[str, int],
) -> RepairPlan:
    """The operations and the lines describing them.

    ``keys`` are the keys repair.lua takes first, ``key`` names a key of the group, ``stray``
    the command and acknowledgement keys of a wrong type, ``holders`` the holders of worker
    locks (identity -> ms their locks live), kept as members if the membership key is deleted.
    """
    plan = RepairPlan(keys=list(keys))
    paused_jobs = set(decoded.paused) | {
        p.item for p in decoded.problems if p.part == "paused" and p.item
    }
    for problem in [*decoded.problems, *stray]:
        if problem.part == "partitions":
            # Readable partitions are kept (generations keep increasing); unreadable ones go.
            op = "del" if _wrong_type(problem) else "unset"
            plan.ops.append((op, plan.key_index(problem.where), str(problem.raw), ""))
            plan.actions.append(
                f"{problem.where}: removed ({problem.detail}); the next assignment starts each "
                "job at a new generation"
            )
            continue
        if _wrong_type(problem):
            plan.ops.append(("del", plan.key_index(problem.where), str(problem.raw), ""))
            plan.actions.append(f"{problem.where}: deleted ({problem.detail})")
            if problem.part == "members":
                plan.actions.append(
                    f"{problem.where}: live processes re-add themselves at their next heartbeat;"
                    " holders of worker locks count as members until their locks expire"
                )
                for identity, ttl in sorted(holders.items()):
                    plan.ops.append(("member", identity, str(ttl), ""))
            continue
        hash_key = problem.where.partition("[")[0]
        if problem.part in ("traits", "info") and problem.item is not None:
            plan.ops.append(("hdel", plan.key_index(hash_key), problem.item, str(problem.raw)))
            plan.actions.append(
                f"{problem.where}: removed ({problem.detail}); the process sends it again at "
                "its next heartbeat"
            )
        elif problem.part == "counts" and problem.item is not None:
            if problem.item in paused_jobs:
                plan.ops.append(("zero", plan.key_index(hash_key), problem.item, str(problem.raw)))
                plan.actions.append(
                    f"{problem.where}: set to 0 ({problem.detail}); job {problem.item} is paused"
                )
            else:
                plan.ops.append(("hdel", plan.key_index(hash_key), problem.item, str(problem.raw)))
                plan.actions.append(
                    f"{problem.where}: removed ({problem.detail}); job {problem.item} runs its "
                    "config count until one is set with `process-balancer scale`"
                )
        elif problem.part == "paused" and problem.item is not None:
            plan.ops.append(("hdel", plan.key_index(hash_key), problem.item, str(problem.raw)))
            plan.actions.append(
                f"{problem.where}: removed ({problem.detail}); job {problem.item} is no longer "
                "paused and keeps its current count"
            )
    plan.actions.append(
        f"{key('assignment')}, {key('unplaced')}: cleared; the group computes a new assignment"
    )
    plan.actions.append(
        f"{key('version')}: moved past every earlier version, and "
        f"{key('assignment_version')} cleared, so every process recomputes"
    )
    return plan
