"""Stable identities: every run of one logical process joins as the same member.

With ``stable_identity: NAME`` a process's member identity is ``NAME`` whatever its host and
pid, so the sticky assignment keeps giving NAME the same slots across restarts. Each run also
draws an instance nonce and takes its worker and autoscaler locks as ``NAME#<instance>``: the
backend counts such a holder as member NAME's, and only the very same text as the holder
itself, so two runs of one name never share a lock.

A run that stops cleanly releases its locks and, instead of leaving, sends one last heartbeat
whose info says ``handoff: <instance>``: NAME's slots stay assigned to it, idle, for
``process_expiry``. The next run of NAME reads the group before its first heartbeat and joins
at once when its predecessor handed over (or NAME is not a member). Otherwise the predecessor
crashed, is frozen, or is another live process using the same name: the new run waits until
NAME's membership is gone or its deadline plus the largest ``takeover_grace`` has passed on
the backend's clock, so a predecessor that may still run iterations has stopped before the new
run counts on the name.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..backends.base import Backend, BackendError, MemberState
from .kernel import EventLike, Kernel

if TYPE_CHECKING:
    from ..config.schema import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StableRun:
    """One run of a process with a stable identity."""

    name: str
    instance: str

    @classmethod
    def start(cls, name: str, token: Callable[[int], str] = secrets.token_hex) -> StableRun:
        return cls(name, token(4))

    @property
    def holder(self) -> str:
        """The holder text of this run's locks."""
        return f"{self.name}#{self.instance}"


class Process(Protocol):
    """What the manager offers this module (it is not imported here: it imports this)."""

    @property
    def backend(self) -> Backend: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def kernel(self) -> Kernel: ...
    @property
    def identity(self) -> str: ...
    @property
    def jobs(self) -> Mapping[str, Any]: ...
    @property
    def incarnation(self) -> str: ...
    @property
    def _seen_assignment_version(self) -> int: ...
    @property
    def _max_version(self) -> int: ...
    @property
    def _hold(self) -> float: ...
    @property
    def _stop_requested(self) -> bool: ...
    @property
    def _wake(self) -> EventLike: ...
    def _traits(self) -> dict[str, Any]: ...
    def _info(self) -> dict[str, Any]: ...


def handed_over(member: MemberState) -> bool:
    """``member``'s last run stopped cleanly: its info names its own instance as handed over."""
    instance = member.traits.get("instance")
    return isinstance(instance, str) and member.info.get("handoff") == instance


def _who(member: MemberState) -> str:
    traits = member.traits
    return (
        f"instance {traits.get('instance', '?')}, pid {traits.get('pid', '?')} on "
        f"{traits.get('hostname', '?')}"
    )


def await_name(manager: Process, run: StableRun) -> bool:
    """:func:`wait_for_name` for ``manager``'s run; False when a stop was requested."""
    jobs = manager.jobs.values()
    return wait_for_name(
        manager.backend,
        run,
        interval=manager.settings.heartbeat_interval,
        expiry=manager.settings.process_expiry,
        grace=max((entry.config.takeover_grace for entry in jobs), default=0.0),
        wake=manager._wake,
        stopped=lambda: manager._stop_requested,
        clock=manager.kernel.time,
    )


def wait_for_name(
    backend: Backend,
    run: StableRun,
    *,
    interval: float,
    expiry: float,
    grace: float,
    wake: EventLike,
    stopped: Callable[[], bool],
    clock: Callable[[], float],
) -> bool:
    """Wait until this run may heartbeat as ``run.name``; False when a stop was requested.

    Re-reads the group every ``interval`` seconds (or when ``wake`` is set). ``grace`` is the
    largest ``takeover_grace`` of this process's jobs; ``clock`` stands in for the backend's
    clock when a snapshot has none.
    """
    first: tuple[float, float] | None = None  # (backend time, deadline) when first seen
    #: The slots the predecessor that did not hand over was assigned, when last seen.
    held: dict[str, list[int]] = {}
    until = 0.0  # the backend time before which the name is not taken
    errored = False
    failures = 0
    while True:
        wake.clear()
        if stopped():
            logger.info(
                "stop requested while waiting for stable identity %s; exiting without joining",
                run.name,
            )
            return False
        try:
            snapshot = backend.snapshot()
        except BackendError as exc:
            failures += 1
            if failures == 1 or failures % 30 == 0:
                logger.warning(
                    "cannot read the group to check stable identity %s (%s); retrying every "
                    "%gs, nothing runs before this process has joined",
                    run.name,
                    str(exc).rstrip(". "),
                    interval,
                )
            wake.wait(interval)
            continue
        now = snapshot.now if snapshot.now is not None else clock()
        member = next((m for m in snapshot.members if m.identity == run.name), None)
        if member is not None and not handed_over(member):
            held = snapshot.assignment.get(run.name, held)
        if member is None and now >= until:
            if first is not None:
                logger.info("stable identity %s is free now; joining as it", run.name)
                free_locks(backend, run, held, grace)
            return True
        if member is not None and handed_over(member):
            logger.info(
                "the previous run of stable identity %s (%s) stopped cleanly and handed its "
                "slots over; this run (instance %s) takes them at once",
                run.name,
                _who(member),
                run.instance,
            )
            return True
        if member is not None:
            until = max(until, member.deadline + grace)
            if now >= until:
                logger.info(
                    "the previous run of stable identity %s (%s) has not heartbeaten since "
                    "its membership expired %.1fs ago: it has stopped; joining as %s",
                    run.name,
                    _who(member),
                    now - member.deadline,
                    run.name,
                )
                free_locks(backend, run, held, grace)
                return True
        if first is None:
            assert member is not None
            first = (now, member.deadline)
            logger.warning(
                "stable identity %s is held by a run that did not hand over (%s): it crashed, "
                "is frozen, or another live process uses this name. This run (instance %s) "
                "does not join before that membership ends or its deadline plus takeover_grace "
                "(%gs) has passed, in %.1fs unless it is renewed, so that run cannot still be "
                "running iterations; its slots wait meanwhile",
                run.name,
                _who(member),
                run.instance,
                grace,
                max(0.0, until - now),
            )
        elif (
            member is not None
            and not errored
            and member.deadline > first[1]
            and now - first[0] > 2 * expiry
        ):
            errored = True
            logger.error(
                "stable identity %s keeps being renewed by another live process (%s) for "
                "%.0fs: two processes use the same stable identity. This run does not join "
                "and runs nothing while that one runs; give every process its own "
                "stable_identity",
                run.name,
                _who(member),
                now - first[0],
            )
        wake.wait(interval)


def free_locks(
    backend: Backend, run: StableRun, held: Mapping[str, list[int]], grace: float
) -> None:
    """Take over and release at once the worker locks of a predecessor that stopped without
    handing over, as any peer may now: its membership ended ``grace`` ago. Once this run
    renews the name again, a lock naming ``NAME#<old instance>`` would count as held by a live
    member until its whole TTL ran out; a lock a peer took meanwhile is refused and kept."""
    freed = 0
    for job_id, indexes in sorted(held.items()):
        for index in indexes:
            name = f"{job_id}:{index}"
            try:
                taken = backend.lock_acquire(name, run.holder, 1.0, grace=grace)
                if taken is not None:
                    backend.lock_release(name, taken.token)
                    freed += 1
            except BackendError as exc:
                logger.warning(
                    "could not free worker lock %s of the previous run of %s (%s); it expires "
                    "by itself within its runtime_lock_timeout",
                    name,
                    run.name,
                    exc,
                )
    if freed:
        logger.info("freed %d worker lock(s) left by the previous run of %s", freed, run.name)


def superseded(backend: Backend, run: StableRun, started_at: float) -> MemberState | None:
    """The member of ``run``'s name when a newer run (started after ``started_at``, this
    run's start) renews it now, else None: this one was cut off long enough for a successor
    to take the name over, or the two heartbeat in turn (each writing its own traits). Read
    before this run heartbeats again, which would take the name back. Of two runs of one
    name exactly one gives way: the older one (the lower instance when both started at
    once)."""
    try:
        snapshot = backend.snapshot()
    except BackendError:
        return None  # the heartbeat about to be sent fails too, and is retried
    member = next((m for m in snapshot.members if m.identity == run.name), None)
    if member is None or member.traits.get("instance") in (None, run.instance):
        return None
    now = snapshot.now
    if now is not None and member.deadline <= now:
        return None
    other = member.traits.get("started_at")
    if not isinstance(other, (int, float)) or isinstance(other, bool):
        return member
    newer = (other, str(member.traits.get("instance"))) > (started_at, run.instance)
    return member if newer else None


def handoff(manager: Process, run: StableRun) -> None:
    """Instead of leaving: one last heartbeat that keeps the membership for process_expiry
    and says this run stopped cleanly (every worker has stopped and released its lock)."""
    settings = manager.settings
    try:
        manager.backend.heartbeat(
            manager.identity,
            traits=manager._traits(),
            info={**manager._info(), "handoff": run.instance},
            expiry=settings.process_expiry,
            seen_assignment_version=manager._seen_assignment_version,
            known_incarnation=manager.incarnation,
            known_version=manager._max_version,
            hold=manager._hold,
        )
    except BackendError as exc:
        logger.warning(
            "could not hand stable identity %s over (%s); a run of it started later waits "
            "until its membership expires, within %.0fs, and peers take its slots then",
            run.name,
            exc,
            settings.process_expiry,
        )
        return
    logger.info(
        "process %s (instance %s) stopped and handed over: a run with stable identity %s "
        "started within %gs (process_expiry) gets the same slots back; otherwise they move to "
        "peers when its membership expires",
        run.name,
        run.instance,
        run.name,
        settings.process_expiry,
    )
