"""A job's ``autoscale:`` entry: the bounds and pace of the count its ``desired_workers()``
sets at runtime."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import checks, defaults

__all__ = ["AUTOSCALE_KEYS", "AutoscaleConfig", "check_autoscale"]

#: Keys of a job's ``autoscale:`` mapping.
AUTOSCALE_KEYS = ("min", "max", "interval", "cooldown")
EXAMPLE = "{min: 1, max: 10, interval: 15, cooldown: 60}"


@dataclass(frozen=True)
class AutoscaleConfig:
    """``autoscale: {min, max, interval, cooldown}`` of one job."""

    #: Fewest workers the autoscaler sets.
    min: int
    #: Most workers the autoscaler sets (at most the job's ``max_workers``).
    max: int
    #: Seconds between two calls of ``desired_workers()``.
    interval: float = defaults.AUTOSCALE_INTERVAL
    #: Seconds since the autoscaler's last change (or since its process began evaluating)
    #: before it lowers the count; raising it never waits.
    cooldown: float = defaults.AUTOSCALE_COOLDOWN

    def clamp(self, desired: int) -> int:
        return max(self.min, min(self.max, desired))


def check_autoscale(
    problems: checks.Problems,
    path: str,
    value: object,
    max_workers: object,
    max_origin: str,
) -> AutoscaleConfig | None:
    """Validate ``jobs.<id>.autoscale``; ``max_workers`` is the job's ceiling (or
    :data:`checks.INVALID`) and ``max_origin`` the key it comes from."""
    if not isinstance(value, Mapping):
        problems.add(path, f"must be a mapping such as {EXAMPLE}, got {checks.show(value)}")
        return None
    start = len(problems.lines)
    for key in value:
        if key not in AUTOSCALE_KEYS:
            problems.add(f"{path}.{key}", checks.unknown_key(key, AUTOSCALE_KEYS, "autoscale key"))
    found: dict[str, Any] = {}
    for key, wanted in (("min", "the fewest workers"), ("max", "the most workers")):
        if key not in value:
            problems.add(
                f"{path}.{key}",
                f"missing; set {wanted} the autoscaler may give the job, e.g. {EXAMPLE}",
            )
            continue
        try:
            found[key] = checks.integer(value[key], 0, "a non-negative integer")
        except checks.Invalid as exc:
            problems.add(f"{path}.{key}", str(exc))
    for key, positive, default in (
        ("interval", True, defaults.AUTOSCALE_INTERVAL),
        ("cooldown", False, defaults.AUTOSCALE_COOLDOWN),
    ):
        try:
            found[key] = checks.seconds(value[key], positive=positive) if key in value else default
        except checks.Invalid as exc:
            problems.add(f"{path}.{key}", str(exc))
    low, high = found.get("min"), found.get("max")
    if low is not None and high is not None and high < low:
        problems.add(
            f"{path}.max",
            f"{high:,} is below autoscale.min = {low:,}; raise max or lower min",
        )
    if high is not None and isinstance(max_workers, int) and high > max_workers:
        problems.add(
            f"{path}.max",
            f"{high:,} is above the job's ceiling max_workers = {max_workers:,} ({max_origin}); "
            f"lower autoscale.max or raise max_workers "
            f"(at most {defaults.MAX_WORKERS_HARD_LIMIT:,})",
        )
    if len(problems.lines) > start:
        return None
    return AutoscaleConfig(
        min=found["min"], max=found["max"], interval=found["interval"], cooldown=found["cooldown"]
    )
