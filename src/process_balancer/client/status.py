"""The status of a group as plain data: what ``process-balancer status --json`` prints.

Pure functions from a backend snapshot to a JSON-ready dict, so the schema is tested without
a server and every renderer (the rich table, ``--json``, a web page) reads the same data.
Values a process wrote are untrusted input: anything of the wrong type reads as unknown
(None) instead of failing the whole report. Data the backend holds that cannot be read at all
(a key of the wrong type, a version that is not a number) is left out and listed under
``"problems"``, each naming where it is and what fixes it; everything else is still shown.

The schema is versioned by the top-level ``"schema"`` field; fields are only ever added
within one schema version. See docs/operations.md for the reference.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..backends.base import Backend, GroupSnapshot, MemberState, Problem
from ..balancing.placement import ANYWHERE, unplaced_reason
from ..balancing.rebalance import config_counts, job_placements, member_from_state
from .autoscale import autoscale_status

__all__ = ["DEFAULT_STUCK_AFTER", "SCHEMA", "build_status", "process_status", "read_status"]

#: Version of the status document's layout.
SCHEMA = 1
#: Seconds after which a running iteration is reported as stuck.
DEFAULT_STUCK_AFTER = 300.0


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _integer(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _age(later: float | None, earlier: float | None) -> float | None:
    if later is None or earlier is None:
        return None
    return round(max(0.0, later - earlier), 3)


def _slot_map(value: object) -> dict[str, list[int]]:
    """``{job: [indexes]}`` from untrusted data, keeping only what reads as such."""
    if not isinstance(value, Mapping):
        return {}
    result: dict[str, list[int]] = {}
    for job_id, indexes in value.items():
        if isinstance(job_id, str) and isinstance(indexes, list):
            result[job_id] = sorted(i for i in indexes if _integer(i) is not None)
    return result


def _slot_key(key: object) -> tuple[str, int] | None:
    if not isinstance(key, str):
        return None
    job_id, sep, index = key.rpartition(":")
    if not sep or not job_id or not index.isdigit():
        return None
    return job_id, int(index)


def _slots(info: Mapping[str, Any], stuck_after: float) -> list[dict[str, Any]]:
    raw = info.get("slots")
    if not isinstance(raw, Mapping):
        return []
    heartbeat_at = _number(info.get("heartbeat_at"))
    slots = []
    for key, entry in raw.items():
        parsed = _slot_key(key)
        if parsed is None or not isinstance(entry, Mapping):
            continue
        # Measured on the process's own clock, as of its last heartbeat: no clock skew.
        iteration_age = _age(heartbeat_at, _number(entry.get("iteration_started")))
        # A job's own max_iteration_time, when it sets one, is what "stuck" means for it.
        limit = _number(entry.get("max_iteration_time"))
        over = stuck_after if limit is None else limit
        slots.append(
            {
                "job": parsed[0],
                "index": parsed[1],
                "state": _text(entry.get("state")),
                "restarts": _integer(entry.get("restarts")) or 0,
                "last_error": _text(entry.get("last_error")),
                "iterations": _integer(entry.get("iterations")),
                "records": _integer(entry.get("records")),
                "lock_losses": _integer(entry.get("lock_losses")),
                "iteration_age": iteration_age,
                "stuck": iteration_age is not None and iteration_age > over,
                "max_iteration_time": limit,
                "overruns": _integer(entry.get("overruns")) or 0,
                "child_pid": _integer(entry.get("child_pid")),
            }
        )
    return sorted(slots, key=lambda s: (s["job"], s["index"]))


def _event_loop(value: object) -> dict[str, Any] | None:
    """The asyncio workers' event loop of a process (None if it runs none): its lag (the
    largest of the last 10 s), stalls over ``warn_after`` and the last one."""
    if not isinstance(value, Mapping):
        return None
    stall = value.get("last_stall")
    last = None
    if isinstance(stall, Mapping):
        last = {
            "seconds": _number(stall.get("seconds")),
            "slot": _text(stall.get("slot")),
            "where": _text(stall.get("where")),
            "at": _number(stall.get("at")),
        }
    lag, warn_after = _number(value.get("lag")), _number(value.get("warn_after"))
    return {
        "lag": lag,
        "stalls": _integer(value.get("stalls")),
        "slots": _integer(value.get("slots")),
        "warn_after": warn_after,
        "lagging": lag is not None and warn_after is not None and lag >= warn_after,
        "last_stall": last,
    }


def process_status(
    member: MemberState,
    *,
    now: float,
    stuck_after: float,
    assigned: Mapping[str, list[int]] | None = None,
) -> dict[str, Any]:
    """One live process: who it is, its state, capacity, and every slot it knows of."""
    traits, info = member.traits, member.info
    quiet = traits.get("quiet") is True
    stopping = traits.get("stopping") is True
    jobs = traits.get("jobs")
    return {
        "identity": member.identity,
        "hostname": _text(traits.get("hostname")),
        "pid": _integer(traits.get("pid")),
        # A stable identity's run, and whether it stopped and handed its slots over.
        "instance": _text(traits.get("instance")),
        "handed_over": isinstance(traits.get("instance"), str)
        and info.get("handoff") == traits.get("instance"),
        "started_at": _number(traits.get("started_at")),
        "heartbeat_age": _age(now, _number(info.get("heartbeat_at"))),
        "expires_in": round(member.deadline - now, 3),
        "state": "stopping" if stopping else "quiet" if quiet else "active",
        "quiet": quiet,
        "stopping": stopping,
        "capacity": _integer(traits.get("capacity")),
        "jobs": sorted(j for j in jobs if isinstance(j, str)) if isinstance(jobs, list) else [],
        "tags": sorted(member_from_state(member, report=False).tags),
        "assigned": _slot_map(assigned or {}),
        "running": _slot_map(info.get("running")),
        "slots": _slots(info, stuck_after),
        "event_loop": _event_loop(info.get("event_loop")),
    }


def _scheduled(
    job_id: str,
    runtime: Mapping[str, int],
    advertised: Mapping[str, int],
    config_workers: Mapping[str, int | None],
) -> tuple[int, str]:
    if job_id in runtime:
        return runtime[job_id], "runtime"
    if job_id in advertised:
        return advertised[job_id], "config"
    workers = config_workers.get(job_id)
    if workers is not None:
        return workers, "config"
    return 1, "default"


def build_status(
    snapshot: GroupSnapshot,
    *,
    now: float,
    stuck_after: float = DEFAULT_STUCK_AFTER,
    paused: Mapping[str, int] | None = None,
    config_workers: Mapping[str, int | None] | None = None,
    namespace: str = "",
    backend: str = "",
    problems: Sequence[Problem] = (),
) -> dict[str, Any]:
    """The status document of a group.

    Args:
        now: the current time, on the backend's clock when it has one (``snapshot.now``).
        paused: paused jobs with the count they resume to.
        config_workers: the ``workers`` of the jobs in the reader's own config file, for jobs
            no live process advertises.
        problems: what the backend holds that could not be read (see :meth:`Backend.inspect`).
    """
    paused = paused or {}
    config_workers = config_workers or {}
    members = sorted(
        snapshot.members,
        key=lambda m: (_number(m.traits.get("started_at")) or 0.0, m.identity),
    )
    processes = [
        process_status(
            m, now=now, stuck_after=stuck_after, assigned=snapshot.assignment.get(m.identity)
        )
        for m in members
    ]
    advertised = config_counts(members)
    rules = job_placements(members)
    views = [member_from_state(m, report=False) for m in members]
    job_ids: set[str] = set(config_workers) | set(snapshot.counts) | set(paused)
    job_ids |= set(snapshot.unplaced)
    for proc in processes:
        job_ids |= set(proc["jobs"]) | set(proc["running"])
    jobs = {}
    for job_id in sorted(job_ids):
        scheduled, source = _scheduled(job_id, snapshot.counts, advertised, config_workers)
        able = [p for p in processes if job_id in p["jobs"]]
        unplaced = sorted(snapshot.unplaced.get(job_id, []))
        if not able and scheduled > 0:
            # No live process can run the job: none of its slots is placed anywhere.
            unplaced = list(range(scheduled))
        rule = rules.get(job_id, ANYWHERE)
        reason = unplaced_reason(job_id, views, rule) if unplaced else None
        partition = snapshot.partitions.get(job_id)
        jobs[job_id] = {
            "scheduled": scheduled,
            "scheduled_from": source,
            "running": sum(len(p["running"].get(job_id, [])) for p in processes),
            "paused": job_id in paused,
            "resume_to": paused.get(job_id),
            "processes": len(able),
            "placement": _placement(job_id, processes),
            "require_tags": sorted(rule.require),
            "prefer_tags": sorted(rule.prefer),
            "weight": float(rule.weight),
            "unplaced": unplaced,
            "unplaced_reason": (
                None if reason is None else {"code": reason.code, "message": reason.message}
            ),
            "stuck": [
                {
                    "index": s["index"],
                    "identity": p["identity"],
                    "iteration_age": s["iteration_age"],
                }
                for p in processes
                for s in p["slots"]
                if s["job"] == job_id and s["stuck"]
            ],
            "autoscale": autoscale_status(job_id, members, paused=job_id in paused),
            # The count the stored assignment spreads and its generation (None before one).
            "generation": partition.generation if partition is not None else None,
            "assigned_count": partition.count if partition is not None else None,
        }
    unreadable = {problem.part for problem in problems}
    return {
        "schema": SCHEMA,
        "namespace": namespace,
        "backend": backend,
        "generated_at": round(now, 3),
        "stuck_after": stuck_after,
        "state_version": None if "version" in unreadable else snapshot.version,
        "assignment_version": (
            None if "assignment_version" in unreadable else snapshot.assignment_version
        ),
        "processes": processes,
        "jobs": jobs,
        "problems": [
            {"where": p.where, "detail": p.detail, "fix": p.fix, "part": p.part} for p in problems
        ],
    }


def read_status(
    backend: Backend,
    *,
    stuck_after: float = DEFAULT_STUCK_AFTER,
    config_workers: Mapping[str, int | None] | None = None,
    namespace: str = "",
) -> dict[str, Any]:
    """The status document of the group in ``backend``: everything that can be read, and a
    problem for each value that cannot."""
    inspection = backend.inspect()
    snapshot = inspection.snapshot
    return build_status(
        snapshot,
        now=snapshot.now if snapshot.now is not None else time.time(),
        stuck_after=stuck_after,
        paused=inspection.paused,
        config_workers=config_workers,
        namespace=namespace,
        backend=backend.display_url,
        problems=inspection.problems,
    )


def _placement(job_id: str, processes: Iterable[Mapping[str, Any]]) -> dict[str, list[int]]:
    """identity -> indexes of the job the stored assignment gives that process."""
    return {p["identity"]: p["assigned"][job_id] for p in processes if p["assigned"].get(job_id)}
