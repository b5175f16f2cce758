"""The worker-count ceiling every backend enforces where counts are written.

Clients check counts before they call a backend, but a backend is shared by every client of a
group, whatever its version or config, so the write itself refuses a count that is not an
integer from 0 to the ceiling. The ceiling is the ``max_workers`` the client passes, never
above :data:`~process_balancer.defaults.MAX_WORKERS_HARD_LIMIT`, which the Lua scripts and the
SQL functions also hard-code. Values travel to them as decimal strings and are parsed there,
so a float or a 23-digit integer is refused as written instead of being rounded to a double.

The scripts answer ``(status, value, ceiling)``; :func:`outcome` turns that into the count,
None, or the one-line error a person can act on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NoReturn

from ..config.defaults import MAX_WORKERS_HARD_LIMIT
from .base import CorruptStateError

__all__ = [
    "ABOVE_CEILING",
    "BAD_DEFAULT",
    "CORRUPT",
    "HARD_LIMIT",
    "NOT_A_COUNT",
    "PAUSED",
    "argument",
    "ceiling",
    "count_to_pause",
    "count_to_resume",
    "count_to_set",
    "outcome",
    "parse",
]

HARD_LIMIT = MAX_WORKERS_HARD_LIMIT
#: Longest decimal string of a count or a change the backends accept ("-1000000").
_DIGITS = len(str(-HARD_LIMIT))

#: Statuses of a refused write; 1 is done, 0 is the operation's own no-op (see each method).
CORRUPT = -1  # the stored value is not a count; value: what is stored
NOT_A_COUNT = -2  # the given to/by is not an integer in range; value: as given
BAD_DEFAULT = -3  # the default count (the config's workers) is not a count; value: as given
ABOVE_CEILING = -4  # the count would be above the ceiling; value: that count
#: A set unless paused found the job paused and wrote nothing (not a refusal: it answers None).
PAUSED = 2

Operation = Literal["set", "pause", "resume"]


def parse(value: object, low: int, high: int) -> int | None:
    """``value`` as an int if it is an integer (or its decimal string, as the scripts accept
    it) from ``low`` to ``high``, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value[1:] if value.startswith("-") else value
        if len(value) > _DIGITS or not text.isascii() or not text.isdigit():
            return None
        value = int(value)
    if not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def ceiling(maximum: object) -> int:
    """The ceiling a write enforces: ``maximum`` when it is a count, else the hard limit."""
    parsed = parse(maximum, 0, HARD_LIMIT)
    return HARD_LIMIT if parsed is None else parsed


def argument(value: object) -> str:
    """``value`` as a script argument: an int as its decimal digits, anything else as its
    repr, which the script then refuses (never a float a script could round)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return repr(value)


def _show(value: object) -> str:
    number = parse(value, -(10**18), 10**18)
    return f"{number:,}" if number is not None else str(value)


def outcome(
    operation: Operation,
    job_id: str,
    status: int,
    value: object,
    limit: object,
    *,
    to: object = None,
    by: object = None,
    where: str = "",
) -> int | None:
    """The result of a count write: the count for status 1, None for status 0 of pause and
    resume and for PAUSED of a set unless paused, else ValueError (a refused value) or
    CorruptStateError (bad stored data).

    ``where`` names the stored value for corrupt-data messages.
    """
    top = _show(limit)
    if status == 1:
        return int(str(value))
    if (status == 0 and operation != "set") or (status == PAUSED and operation == "set"):
        return None
    if status == 0:
        raise ValueError(
            f"cannot change the worker count of job {job_id!r} by {by}: it is {_show(value)}, "
            "and a count cannot go below 0; nothing was changed"
        )
    if status == CORRUPT:
        what = (
            f"the count to resume job {job_id!r} with, stored in {where},"
            if operation == "resume"
            else f"the worker count of job {job_id!r} stored in {where}"
        )
        fix = {
            "set": f"so it cannot be changed by {by}; set it with to=N instead",
            "pause": "so it cannot be remembered; set it with process-balancer scale first",
            "resume": "set the count with process-balancer scale instead",
        }[operation]
        kind = "an integer" if operation == "set" else "a count"
        raise CorruptStateError(f"{what} is {value!r}, not {kind} from 0 to {HARD_LIMIT:,}, {fix}")
    if status == NOT_A_COUNT and to is not None:
        raise ValueError(
            f"cannot set the worker count of job {job_id!r} to {value}: a count must be an "
            f"integer from 0 to {top} (max_workers); nothing was changed"
        )
    if status == NOT_A_COUNT:
        raise ValueError(
            f"cannot change the worker count of job {job_id!r} by {value}: a change must be "
            f"an integer, and the count must stay from 0 to {top} (max_workers); nothing was "
            "changed"
        )
    if status == BAD_DEFAULT:
        raise ValueError(
            f"the default worker count of job {job_id!r} (its config's workers) is {value}, "
            f"not an integer from 0 to {top} (max_workers); nothing was changed"
        )
    if status == ABOVE_CEILING and operation == "set":
        raise ValueError(
            f"cannot change the worker count of job {job_id!r} by {by}: the result, "
            f"{_show(value)}, would be above its ceiling of {top} (max_workers); nothing was "
            "changed"
        )
    if status == ABOVE_CEILING and operation == "pause":
        raise ValueError(
            f"cannot pause job {job_id!r}: its count, {_show(value)}, is above its ceiling of "
            f"{top} (max_workers), so it cannot be remembered; nothing was changed; set a "
            "count with process-balancer scale (0 stops every worker)"
        )
    if status == ABOVE_CEILING:
        raise ValueError(
            f"cannot resume job {job_id!r} with {_show(value)} workers: that is above its "
            f"ceiling of {top} (max_workers); nothing was changed; set a count with "
            "process-balancer scale"
        )
    raise CorruptStateError(f"unexpected answer {status!r} to a count write for job {job_id!r}")


# The backends that run in Python (SQLite, in-memory) decide a count write as set_count.lua,
# pause.lua and resume.lua do: every value is checked as the decimal string it would be sent
# to a script as, and a refusal raises before anything is written.


def _refuse(
    operation: Operation,
    job_id: str,
    status: int,
    value: object,
    limit: int,
    *,
    to: object = None,
    by: object = None,
    where: str = "",
) -> NoReturn:
    outcome(operation, job_id, status, value, limit, to=to, by=by, where=where)
    raise AssertionError(f"status {status} of a {operation} is not a refusal")


def count_to_set(
    job_id: str,
    stored: Callable[[], object],
    *,
    to: object,
    by: object,
    default: object,
    maximum: object,
    where: str,
) -> int:
    """The count Backend.set_count stores, or its ValueError (or CorruptStateError).

    ``stored`` reads the runtime count as stored (None: none is set); it is read only for a
    change ``by``, which starts from it (else from ``default``). ``where`` names it.
    """
    limit = ceiling(argument(maximum))

    def refuse(status: int, value: object) -> NoReturn:
        _refuse("set", job_id, status, value, limit, to=to, by=by, where=where)

    if to is not None:
        new = parse(argument(to), 0, limit)
        return refuse(NOT_A_COUNT, to) if new is None else new
    change = parse(argument(by), -HARD_LIMIT, HARD_LIMIT)
    if change is None:
        refuse(NOT_A_COUNT, by)
    raw = stored()
    if raw is None:
        current = parse(argument(default), 0, limit)
        if current is None:
            refuse(BAD_DEFAULT, default)
    else:
        current = parse(raw, 0, HARD_LIMIT)
        if current is None:
            refuse(CORRUPT, raw)
    new = current + change
    if new < 0:
        refuse(0, current)
    if new > limit:
        refuse(ABOVE_CEILING, new)
    return new


def count_to_pause(
    job_id: str, stored: object, *, default: object, maximum: object, where: str
) -> int:
    """The count Backend.pause remembers (the runtime count ``stored`` at ``where``, else
    ``default``), or its ValueError (or CorruptStateError). The caller has checked that the
    job is not paused already."""
    limit = ceiling(argument(maximum))
    current = parse(argument(default) if stored is None else stored, 0, HARD_LIMIT)
    if current is None:
        status, value = (BAD_DEFAULT, default) if stored is None else (CORRUPT, stored)
        _refuse("pause", job_id, status, value, limit, where=where)
    if current > limit:
        _refuse("pause", job_id, ABOVE_CEILING, current, limit)
    return current


def count_to_resume(job_id: str, stored: object, *, maximum: object, where: str) -> int:
    """The count Backend.resume restores (``stored`` at ``where``, not None), or its
    ValueError (or CorruptStateError)."""
    limit = ceiling(argument(maximum))
    count = parse(stored, 0, HARD_LIMIT)
    if count is None:
        _refuse("resume", job_id, CORRUPT, stored, limit, where=where)
    if count > limit:
        _refuse("resume", job_id, ABOVE_CEILING, count, limit)
    return count
