"""The coordination backend interface every backend (Redis, PostgreSQL, SQLite) implements.

A backend stores the shared state of one group (a namespace): the live members with their
heartbeat deadlines, each member's traits (capacity, quiet, jobs it can run) and volatile info
(what it runs now), the worker counts set at runtime, the current assignment of slots with the
state version it was computed from, remote commands addressed to members, and the worker locks.

Every change to an input of the assignment (membership, traits, counts) bumps one integer
``version``. The assignment is stored with the version it was computed from, and is written
only if that version is still current (compare-and-set), so every process agrees on one
assignment per version and slots never flap between two views.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

from ..config.defaults import MAX_WORKERS
from ..errors import BackendError as BackendError
from ..errors import CorruptStateError as CorruptStateError
from .records import Acquired as Acquired
from .records import Gate as Gate
from .records import GroupSnapshot as GroupSnapshot
from .records import HeartbeatResult as HeartbeatResult
from .records import Inspection as Inspection
from .records import MemberState as MemberState
from .records import MigrateResult as MigrateResult
from .records import Partition as Partition
from .records import Problem as Problem
from .records import RepairReport as RepairReport

#: Expired members one heartbeat removes at most; the rest go in the following heartbeats, so
#: one heartbeat never does unbounded work, even after a mass failure. Every backend uses it.
PRUNE_BATCH = 100
#: The remote commands a process carries out (sent by the API, the CLI and the dashboard).
COMMANDS = ("quiet", "stop", "dump")
#: Pending remote commands for a member are dropped if it never picks them up (ms).
COMMAND_TTL_MS = 10 * 60 * 1000
#: Acknowledgements of a remote command are kept this long for the sender to read (ms).
ACK_TTL_MS = 10 * 60 * 1000


#: What to do about unreadable derived state (membership, assignment, version).
REPAIR_HINT = (
    "run `process-balancer repair` to rebuild the group's membership, assignment and version "
    "(every readable count and pause is kept)"
)
#: What to do about an unreadable worker count or pause.
SCALE_HINT = (
    "set the count again with `process-balancer scale JOB N` "
    "(`process-balancer repair --yes` removes it)"
)


class StopSignal(Protocol):
    """What :meth:`Backend.listen` reads of its ``stop`` (a ``threading.Event`` in
    production; the runtime's kernel may give another)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Backend(abc.ABC):
    """Shared state of one group of processes, identified by ``namespace``."""

    url: str
    namespace: str
    #: Processes on several hosts can share the group (False: one host, or one Python process).
    multi_host: ClassVar[bool] = True

    @classmethod
    def open(cls, url: str, namespace: str, *, create: bool = True) -> Backend:
        """The backend for ``url``. ``create=False`` is for commands that only read: nothing
        that does not exist yet (a file, a directory) is created."""
        return cls(url, namespace)  # type: ignore[call-arg]

    def scope_notice(self, *, default: bool) -> str | None:
        """What a runner says once at start when the group cannot span hosts (None when it
        can). ``default``: the backend was chosen because none was configured."""
        return None

    @classmethod
    def migrate(cls, url: str) -> MigrateResult | None:
        """Create or upgrade the backend's tables ahead of time; None for a backend that has
        none to create (``process-balancer migrate`` then has nothing to do)."""
        return None

    # -- membership --------------------------------------------------------------------------

    @abc.abstractmethod
    def heartbeat(
        self,
        identity: str,
        *,
        traits: Mapping[str, Any],
        info: Mapping[str, Any],
        expiry: float,
        seen_assignment_version: int,
        known_incarnation: str = "",
        known_version: int = 0,
        hold: float = 0.0,
    ) -> HeartbeatResult:
        """Refresh ``identity``'s membership for ``expiry`` seconds and prune expired members.

        Costs a bounded amount of work when membership is unchanged, whatever the group size.
        Pending remote commands for ``identity`` are returned and removed.

        The group's incarnation begins anew when the backend has no state for the group while
        the caller knew one (``known_incarnation``), when the server is not the one that
        created the incarnation (restart, failover), or when the stored state version is
        older than ``known_version``, the highest the caller has seen (a restore). A new
        incarnation grants no worker lock for ``hold`` seconds (a group that is simply new
        starts without that wait).
        """

    @abc.abstractmethod
    def reset_incarnation(self, expected: str, hold: float) -> str:
        """Begin a new incarnation if the current one is ``expected``; no worker lock is
        granted for ``hold`` seconds. Returns the incarnation now current."""

    @abc.abstractmethod
    def leave(self, identity: str) -> None:
        """Remove ``identity`` from the group at once."""

    @abc.abstractmethod
    def snapshot(self) -> GroupSnapshot:
        """Read live members, counts and the current assignment atomically."""

    @abc.abstractmethod
    def write_assignment(
        self,
        version: int,
        slots: Mapping[str, Mapping[str, tuple[int, ...]]],
        unplaced: Mapping[str, tuple[int, ...]],
        partitions: Mapping[str, Partition] | None = None,
    ) -> bool:
        """Store an assignment computed from state ``version`` if that is still current,
        with every job's count and generation (``partitions``; None stores none), in one
        atomic step: heartbeats return them with the slots, gated locks check them."""

    @abc.abstractmethod
    def inspect(self) -> Inspection:
        """Read everything :meth:`snapshot` reads, plus pauses, without failing on what cannot
        be read: unreadable values are left out and listed as problems."""

    @abc.abstractmethod
    def repair(self, *, apply: bool) -> RepairReport:
        """Rebuild the group's derived state from what can be read, in one atomic step.

        Unreadable members (or their traits and info) are dropped, live processes re-add
        themselves at their next heartbeat; the assignment and unplaced slots are cleared
        (readable partitions are kept, so generations keep increasing); the
        version is moved past any value it had, so every process recomputes. Readable counts
        and pauses are kept, unreadable ones removed. Worker locks and fencing counters are
        never touched. Without ``apply`` nothing is written: the report says what would be.
        """

    # -- worker counts -----------------------------------------------------------------------

    @abc.abstractmethod
    def get_count(self, job_id: str) -> int | None:
        """The worker count set at runtime for ``job_id``, or None."""

    @abc.abstractmethod
    def set_count(
        self,
        job_id: str,
        *,
        to: int | None,
        by: int | None,
        default: int,
        maximum: int = MAX_WORKERS,
    ) -> int:
        """Set (``to``) or change (``by``, from the current count or ``default``) the count.

        Raises ValueError (and writes nothing) unless the given value is an integer and the
        result one from 0 to ``maximum`` (the job's ``max_workers``; never above
        MAX_WORKERS_HARD_LIMIT, which the backend enforces whatever the caller passes).
        """

    @abc.abstractmethod
    def set_count_unless_paused(
        self,
        job_id: str,
        *,
        to: int | None,
        by: int | None,
        default: int,
        maximum: int = MAX_WORKERS,
    ) -> int | None:
        """:meth:`set_count`, in one atomic step with the check that the job is not paused:
        while it is, nothing is written (its count, the count it resumes to and the version
        stay as they are) and the answer is None. A value :meth:`set_count` would refuse is
        the same ValueError, paused or not. What the autoscaler writes: a pause, even one
        that lands while it evaluates, always wins over it."""

    @abc.abstractmethod
    def clear_count(self, job_id: str) -> None:
        """Forget the runtime count so the config's ``workers`` applies again."""

    @abc.abstractmethod
    def pause(self, job_id: str, *, default: int, maximum: int = MAX_WORKERS) -> int | None:
        """Set the count to 0 and remember the count it had (the runtime count, else
        ``default``), in one atomic step. Returns the remembered count, or None (and changes
        nothing) when the job is paused already. A count to remember above ``maximum`` is a
        ValueError and nothing changes.

        Setting or clearing the count of a paused job ends its pause
        (:meth:`set_count_unless_paused` does not).
        """

    @abc.abstractmethod
    def resume(self, job_id: str, *, maximum: int = MAX_WORKERS) -> int | None:
        """Restore the count remembered by :meth:`pause` and forget it; returns the count, or
        None (and changes nothing) when the job is not paused. A remembered count above
        ``maximum`` is a ValueError and nothing changes."""

    @abc.abstractmethod
    def paused_counts(self) -> dict[str, int]:
        """Paused jobs with the counts they resume to."""

    @abc.abstractmethod
    def unplaced(self) -> dict[str, list[int]]:
        """Slots per job the stored assignment could not place; one cheap read."""

    # -- remote commands ---------------------------------------------------------------------

    @abc.abstractmethod
    def send_command(self, identity: str, command: Mapping[str, Any]) -> bool:
        """Queue ``command`` for ``identity``; False (nothing queued) if it is not a member."""

    @abc.abstractmethod
    def ack_command(self, identity: str, command_id: str, at: float) -> None:
        """Record that ``identity`` handled command ``command_id`` at ``at`` (epoch seconds).

        Acknowledgements expire by themselves after a few minutes.
        """

    @abc.abstractmethod
    def command_acks(self, command_id: str) -> dict[str, float]:
        """Identities that acknowledged ``command_id``, with the time each one did."""

    # -- worker locks ------------------------------------------------------------------------

    @abc.abstractmethod
    def lock_acquire(
        self,
        name: str,
        holder: str,
        ttl: float,
        *,
        grace: float = 0.0,
        token: str | None = None,
        gate: Gate | None = None,
    ) -> Acquired | None:
        """Take lock ``name`` for ``holder`` for ``ttl`` seconds.

        Succeeds if the lock is free, expired, held by ``holder`` itself (a lock left by a
        release or an acquire whose answer was lost), held in an earlier incarnation of the
        group, or held by a member whose membership expired at least ``grace`` seconds ago.
        Fails while a new incarnation grants no locks (plus ``grace``). Every success gives a
        fencing token greater than every earlier one of this lock, also across a backend
        that restarted empty or went back to an older state (it is at least the backend's
        clock in microseconds).

        A holder written ``member#instance`` is one run of process ``member`` (a stable
        identity): its membership is ``member``'s, and only the very same text counts as
        "``holder`` itself".

        ``token`` is the lock's token (a random one when None): a caller that chose it can
        release the lock with it when the answer was lost and it does not know whether the
        lock was taken.

        ``gate``: the lock is taken under a partitioned job's generation (see :class:`Gate`),
        checked in the same atomic step: refused unless the stored partitions give
        ``gate.job_id`` that generation, and, for the first lock of a new generation, unless
        every lock taken under the job's earlier generation is free as above (a lock naming
        ``holder`` itself counts as held there). An unreadable gate record is replaced by
        one that grants nothing for ``ttl`` plus ``grace``, so every holder of the old one
        has stopped (it cannot renew) before a generation starts again.
        """

    @abc.abstractmethod
    def lock_renew(
        self, name: str, token: str, ttl: float, *, grace: float = 0.0, gate: Gate | None = None
    ) -> bool:
        """Extend the lock to ``ttl`` (plus ``grace``, as at acquisition) if ``token`` still
        holds it in the group's current incarnation; False means it is lost. With ``gate``,
        also only while the job's gate is still at ``gate.generation`` with this lock in it."""

    @abc.abstractmethod
    def lock_release(self, name: str, token: str) -> bool:
        """Release the lock if ``token`` still holds it; never touches another holder's lock."""

    # -- notifications -----------------------------------------------------------------------

    @abc.abstractmethod
    def listen(self, on_event: Callable[[str], None], stop: StopSignal) -> None:
        """Block, calling ``on_event(message)`` for group events, until ``stop`` is set.

        Messages: ``"state"`` (an input of the assignment changed), ``"assignment"`` (a new
        assignment was written), ``"released <lock name>"`` (a worker lock was released).
        Connection problems are retried inside; this returns only when ``stop`` is set.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, for logs and status output."""
        return redact_url(self.url)


def redact_url(url: str) -> str:
    """Hide the password in ``scheme://user:password@host`` URLs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, hostpart = rest.rpartition("@")
    if ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        userinfo = f"{user}:***"
    return f"{scheme}://{userinfo}@{hostpart}"
