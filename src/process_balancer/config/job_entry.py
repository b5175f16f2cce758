"""One entry under ``jobs:`` in the config file: its keys, their validation, what it publishes."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import checks, defaults
from .autoscale import AutoscaleConfig, check_autoscale

__all__ = ["JOB_KEYS", "JobConfig", "check_job", "placement_traits"]

logger = logging.getLogger(__name__)

#: Keys of a job entry the runner reads itself; every other key is the job's own option.
JOB_KEYS = (
    "class",
    "workers",
    "runtime_lock_timeout",
    "lock_acquire_timeout",
    "takeover_grace",
    "max_workers",
    "worker",
    "max_iteration_time",
    "iteration_context",
    "placement",
    "weight",
    "autoscale",
    "partitioned",
)
#: Keys of a job's ``placement:`` mapping.
PLACEMENT_KEYS = ("require", "prefer")


@dataclass(frozen=True)
class JobConfig:
    """One entry under ``jobs:``."""

    job_id: str
    class_path: str
    workers: int | None
    runtime_lock_timeout: float
    lock_acquire_timeout: float
    options: dict[str, Any]
    #: Seconds a peer waits past this job's holder's deadline before taking a slot over.
    takeover_grace: float = defaults.TAKEOVER_GRACE
    #: Most workers this job may be scaled to (its own ``max_workers``, else the global one).
    max_workers: int = defaults.MAX_WORKERS
    #: How each slot's iterations run (``runtime/workers/``): ``thread`` or ``asyncio``;
    #: None (not set) picks by the job's class: ``asyncio`` for an AsyncBase, else ``thread``.
    worker: str | None = None
    #: Seconds after which a running iteration is reported overdue (and, for the process
    #: kind, its child killed); None: no limit.
    max_iteration_time: float | None = None
    #: ``module:function`` names of context-manager factories entered around each iteration.
    iteration_context: tuple[str, ...] = ()
    #: Tags a process must have to run this job's slots (``placement.require``).
    require: tuple[str, ...] = ()
    #: Tags this job's slots look for first (``placement.prefer``).
    prefer: tuple[str, ...] = ()
    #: What one slot of this job costs compared with other jobs' slots, for spreading.
    weight: float = defaults.WEIGHT
    #: The bounds and pace of the count ``desired_workers()`` sets; None: not autoscaled.
    autoscale: AutoscaleConfig | None = None
    #: A change of the count is a barrier between generations; None: as the job's class
    #: says (its ``partitioned`` attribute).
    partitioned: bool | None = None


def placement_traits(jobs: Mapping[str, JobConfig]) -> dict[str, dict[str, Any]]:
    """The placement rules a process publishes with its traits: job id -> require, prefer,
    weight, for the jobs that set one (a job missing here may run on any process)."""
    return {
        job_id: {"require": list(job.require), "prefer": list(job.prefer), "weight": job.weight}
        for job_id, job in sorted(jobs.items())
        if job.require or job.prefer or job.weight != defaults.WEIGHT
    }


def _check_placement(
    problems: checks.Problems, path: str, value: object
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``placement: {require: [tags], prefer: [tags]}`` -> (require, prefer)."""
    if value is None:
        return (), ()
    if not isinstance(value, Mapping):
        problems.add(
            path,
            "must be a mapping such as {require: [gpu], prefer: [eu-west]}, "
            f"got {checks.show(value)}",
        )
        return (), ()
    found: dict[str, tuple[str, ...]] = {}
    for key, tags in value.items():
        if key not in PLACEMENT_KEYS:
            problems.add(f"{path}.{key}", checks.unknown_key(key, PLACEMENT_KEYS, "placement key"))
            continue
        try:
            found[key] = checks.tags(tags)
        except checks.Invalid as exc:
            problems.add(f"{path}.{key}", str(exc))
    require, prefer = found.get("require", ()), found.get("prefer", ())
    both = sorted(set(require) & set(prefer))
    if both:
        problems.add(
            f"{path}.prefer",
            f"{', '.join(both)} {'is' if len(both) == 1 else 'are'} required already; list a "
            "tag under require (only processes with it run the job) or prefer (they run it "
            "first), not both",
        )
    return require, prefer


def check_job(
    problems: checks.Problems, job_id: object, entry: object, global_max: tuple[Any, str]
) -> JobConfig | None:
    """Validate one job entry; ``global_max`` is the merged global ``max_workers`` (value, key
    path), the job's ceiling unless it sets its own."""
    path = f"jobs.{job_id}"
    if not isinstance(job_id, str) or not checks.NAME.fullmatch(job_id):
        problems.add(
            path,
            "a job id must be a non-empty string of letters, digits, '_', '.' and '-', "
            f"got {checks.show(job_id)}",
        )
        return None
    if not isinstance(entry, Mapping):
        problems.add(
            path, f"must be a mapping with at least a 'class' key, got {checks.show(entry)}"
        )
        return None
    start = len(problems.lines)
    class_path = entry.get("class")
    if "class" not in entry:
        problems.add(f"{path}.class", "missing; name the job class as 'module:Class'")
    elif not isinstance(class_path, str) or not class_path.strip():
        problems.add(
            f"{path}.class", f"must be a 'module:Class' string, got {checks.show(class_path)}"
        )

    def optional(key: str, check: Callable[[object], Any], default: Any) -> Any:
        if key not in entry:
            return default
        try:
            return check(entry[key])
        except checks.Invalid as exc:
            problems.add(f"{path}.{key}", str(exc))
            return default

    workers = optional("workers", lambda v: checks.integer(v, 0, "a non-negative integer"), None)
    lock_timeout = optional(
        "runtime_lock_timeout",
        lambda v: checks.seconds(v, positive=True),
        defaults.RUNTIME_LOCK_TIMEOUT,
    )
    acquire_timeout = optional(
        "lock_acquire_timeout",
        lambda v: checks.seconds(v, positive=True),
        defaults.LOCK_ACQUIRE_TIMEOUT,
    )
    grace = optional(
        "takeover_grace", lambda v: checks.seconds(v, positive=False), defaults.TAKEOVER_GRACE
    )
    worker = optional("worker", checks.worker_kind, None)
    limit = optional("max_iteration_time", lambda v: checks.seconds(v, positive=True), None)
    contexts = optional("iteration_context", checks.iteration_context, ())
    weight = optional("weight", checks.weight, defaults.WEIGHT)
    partitioned = optional("partitioned", checks.boolean, None)
    require, prefer = _check_placement(problems, f"{path}.placement", entry.get("placement"))
    max_workers, max_origin = global_max
    if "max_workers" in entry:
        max_workers = optional("max_workers", checks.max_workers, checks.INVALID)
        max_origin = f"{path}.max_workers"
    if workers is not None and max_workers is not checks.INVALID and workers > max_workers:
        own = f"{path}.max_workers"
        raise_it = "raise it" if max_origin == own else f"set {own}"
        problems.add(
            f"{path}.workers",
            f"{workers:,} is above the job's ceiling max_workers = {max_workers:,} "
            f"({max_origin}); lower workers or {raise_it} "
            f"(at most {defaults.MAX_WORKERS_HARD_LIMIT:,})",
        )
    autoscale = None
    if "autoscale" in entry:
        autoscale = check_autoscale(
            problems, f"{path}.autoscale", entry["autoscale"], max_workers, max_origin
        )
    for key in entry:
        close = difflib.get_close_matches(str(key), JOB_KEYS, n=1, cutoff=0.8)
        if key not in JOB_KEYS and close:
            logger.warning(
                "%s: %s.%s is passed to the job as its own option; did you mean %r?",
                problems.source,
                path,
                key,
                close[0],
            )
    if len(problems.lines) > start:
        return None
    return JobConfig(
        job_id=job_id,
        class_path=str(class_path),
        workers=workers,
        runtime_lock_timeout=lock_timeout,
        lock_acquire_timeout=acquire_timeout,
        options=dict(entry),
        takeover_grace=grace,
        max_workers=max_workers,
        worker=worker,
        max_iteration_time=limit,
        iteration_context=contexts,
        require=require,
        prefer=prefer,
        weight=weight,
        autoscale=autoscale,
        partitioned=partitioned,
    )
