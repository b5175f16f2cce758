"""What every backend does the same way around its own storage.

The backends differ in where the group's state lives and how an operation is made atomic;
what they do with the answers does not differ, and is kept here so that the backends cannot
drift apart: the event listener's reconnect loop, the decoding of remote commands, the
warnings and errors a person reads (lock takeovers, unreadable counts), and the conversion of
lifetimes between the seconds of the interface and the milliseconds of the Lua scripts and
SQL functions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from .base import ACK_TTL_MS, COMMAND_TTL_MS, CorruptStateError, StopSignal
from .codec import count_problem, count_value, parse_slots, report_once

logger = logging.getLogger(__name__)

# -- lifetimes ---------------------------------------------------------------------------------


def ms(seconds: float) -> int:
    """``seconds`` as the whole milliseconds the scripts and SQL functions take (rounded
    toward zero, so a lifetime is never made longer than asked)."""
    return int(seconds * 1000)


def hold_ms(seconds: float) -> int:
    """A wait in milliseconds; a negative one is no wait at all."""
    return max(0, ms(seconds))


def lock_ttl_ms(seconds: float) -> int:
    """A worker lock's lifetime in milliseconds: at least 1, since a lock that expires as it
    is written would be granted to nobody (and Redis refuses an expiry of 0)."""
    return max(1, ms(seconds))


def lock_lifetime(seconds: float) -> float:
    """A worker lock's lifetime in seconds, for the backends that keep times as seconds: at
    least the millisecond :func:`lock_ttl_ms` grants."""
    return max(0.001, seconds)


def seconds(milliseconds: float) -> float:
    """Milliseconds (a server clock, a remaining lifetime) as seconds."""
    return milliseconds / 1000.0


#: Seconds a pending remote command waits for its member (COMMAND_TTL_MS), for the backends
#: that keep times as seconds.
COMMAND_TTL = seconds(COMMAND_TTL_MS)
#: Seconds an acknowledgement is kept for its sender to read (ACK_TTL_MS).
ACK_TTL = seconds(ACK_TTL_MS)

# -- remote commands ---------------------------------------------------------------------------


def decode_commands(
    bodies: Iterable[Any], identity: str, *, parsed: bool = False
) -> list[dict[str, Any]]:
    """The remote commands queued for ``identity``: each stored body (JSON text, or already
    decoded with ``parsed``) that is a JSON object. Anything else was not written by a
    process-balancer client; it is dropped with a warning rather than stopping the heartbeat
    that carried it."""
    commands = []
    for body in bodies:
        try:
            command = body if parsed else json.loads(body)
        except (TypeError, ValueError):
            command = None
        if not isinstance(command, dict):
            logger.warning("ignoring unreadable remote command %r for %s", body, identity)
            continue
        commands.append(command)
    return commands


# -- worker locks ------------------------------------------------------------------------------


def member_of(holder: str) -> str:
    """The member a lock holder belongs to: ``member#instance`` (one run of a process with a
    stable identity) is ``member``'s; any other holder is the member itself."""
    return holder.partition("#")[0]


def log_takeover(name: str, previous: object) -> None:
    """Say that a worker lock (or a job's autoscaling lock, ``<job>:autoscale``) went to a
    new holder before its TTL ran out: its holder's membership expired, so it is presumed
    dead (or cut off and about to stop)."""
    job, _, part = name.rpartition(":")
    what = f"autoscaling of job {job}" if part == "autoscale" else f"worker lock {name}"
    logger.warning("%s taken over from %s, whose membership has expired", what, previous)


# -- worker counts -----------------------------------------------------------------------------


def runtime_count(raw: object, where: str) -> int | None:
    """A stored runtime count (None: none is set); a value that is not a count is a
    CorruptStateError naming ``where`` and how to set it again."""
    if raw is None:
        return None
    count = count_value(raw)
    if count is None:
        raise CorruptStateError(str(count_problem(raw, where)))
    return count


def readable_pauses(stored: Iterable[tuple[object, object, str]]) -> dict[str, int]:
    """Paused jobs with the counts they resume to, from ``(job, stored count, where)``.

    A count that cannot be read is logged once and left out: the job stays paused (its
    count is 0) and resume refuses it until a count is set again.
    """
    paused = {}
    for job_id, raw, where in stored:
        count = count_value(raw)
        if count is None:
            report_once(count_problem(raw, where, "paused", str(job_id)))
            continue
        paused[str(job_id)] = count
    return paused


def unplaced_slots(raw: Any, where: str) -> dict[str, list[int]]:
    """The stored unplaced slots ``{job: [index, ...]}`` (the caller passes ``"{}"`` when
    there is no value); anything else is a CorruptStateError naming ``where``."""
    return {job: list(indexes) for job, indexes in parse_slots(raw, where).items()}


# -- notifications -----------------------------------------------------------------------------

#: Seconds before the first attempt to listen again after a failure; doubled after each
#: failure in a row, up to LISTEN_RETRY_MAX.
LISTEN_RETRY_FIRST = 0.1
LISTEN_RETRY_MAX = 5.0


def listen_with_retry(
    listen_once: Callable[[Callable[[], None]], None],
    on_event: Callable[[str], None],
    stop: StopSignal,
    *,
    failures: tuple[type[Exception], ...],
    what: str,
    explain: Callable[[Exception], str] = str,
) -> None:
    """Keep listening until ``stop`` is set, as Backend.listen promises: a lost subscription
    is retried with a growing delay, so a backend that is down is not hammered, and the
    delay starts short again once a subscription works.

    ``listen_once(subscribed)`` subscribes, calls ``subscribed()`` once it receives events,
    passes them on until ``stop`` is set, and releases what it opened; it raises one of
    ``failures`` when the subscription fails. ``what`` names the subscription in the warning
    (``LISTEN on PostgreSQL at URL``), ``explain`` the failure.
    """
    delay = LISTEN_RETRY_FIRST

    def subscribed() -> None:
        nonlocal delay
        delay = LISTEN_RETRY_FIRST
        # From here on no event is missed: a caller may wait for this before it makes changes.
        on_event("subscribed")

    while not stop.is_set():
        try:
            listen_once(subscribed)
        except failures as exc:
            logger.warning("%s failed (%s); retrying in %.1fs", what, explain(exc), delay)
            stop.wait(delay)
            delay = min(delay * 2, LISTEN_RETRY_MAX)
