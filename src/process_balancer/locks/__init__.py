"""Worker lock drivers: built-in ones by name, or any :class:`LockDriver` subclass."""

from __future__ import annotations

from typing import Any

from .advisory import AdvisoryLock
from .base import LockContext, LockDriver
from .simple_redis import SimpleRedisLock

__all__ = [
    "BUILTIN_DRIVERS",
    "AdvisoryLock",
    "LockContext",
    "LockDriver",
    "SimpleRedisLock",
    "resolve_driver",
]

BUILTIN_DRIVERS: dict[str, type[LockDriver]] = {
    "simple_redis": SimpleRedisLock,
    "advisory_lock": AdvisoryLock,
}


def resolve_driver(spec: str | type[Any], *, job_id: str) -> type[LockDriver]:
    """The driver class named by a job's ``lock_driver`` attribute."""
    if isinstance(spec, str):
        try:
            return BUILTIN_DRIVERS[spec]
        except KeyError:
            known = ", ".join(sorted(BUILTIN_DRIVERS))
            raise ValueError(
                f"job {job_id!r}: unknown lock_driver {spec!r}; use one of {known} "
                "or a process_balancer.LockDriver subclass"
            ) from None
    if isinstance(spec, type) and issubclass(spec, LockDriver):
        return spec
    raise ValueError(
        f"job {job_id!r}: lock_driver must be a driver name or a process_balancer.LockDriver "
        f"subclass, got {spec!r}"
    )
