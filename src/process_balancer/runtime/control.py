"""How a running process is told what to do: signals, remote commands, backend events and
calls from embedding code all end as a request the manager's loop carries out."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import sys
import threading
import traceback
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

from ..backends.base import COMMANDS, Backend, BackendError
from ..balancing.rebalance import rebalance
from .kernel import EventLike, Kernel
from .observer import Observer
from .stable import handoff, superseded
from .wakeups import Notifier

if TYPE_CHECKING:
    from ..config.schema import Settings
    from .autoscale import Autoscaler
    from .leases import Lease, LeaseKeeper, Membership
    from .stable import Process, StableRun
    from .supervisor import Supervisor

logger = logging.getLogger(__name__)


def make_identity() -> str:
    """``hostname:pid:nonce``: unique even when a pid is reused on the same host."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def thread_dump() -> str:
    """Every thread's current stack, as text."""
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame))
        parts.append(f"Thread {names.get(ident, '?')} ({ident}):\n{stack}")
    return "\n".join(parts)


class Controls:
    """The manager's requests, signal handlers, remote commands and the read-only state
    observers see (a mixin of Manager)."""

    identity: str
    stable: StableRun | None
    backend: Backend
    notifier: Notifier
    kernel: Kernel
    _wake: EventLike
    _listener_stop: EventLike
    _stop_requested: bool
    _quiet: bool
    _dump_requested: bool
    _signals_seen: int
    _joined_once: bool
    _stopping: bool
    _superseded: bool
    keeper: LeaseKeeper
    membership: Membership
    _partitions_unreadable: bool
    jobs: dict[str, Any]
    observers: list[Observer]
    settings: Settings
    supervisor: Supervisor
    autoscaler: Autoscaler
    started_at: float

    # -- requests (signal handlers, remote commands, embedding code) -------------------------

    def request_stop(self) -> None:
        self._stop_requested = True
        self._wake.set()

    def request_quiet(self) -> None:
        self._quiet = True
        self._wake.set()

    def request_dump(self) -> None:
        self._dump_requested = True
        self._wake.set()

    # -- events, commands, signals -----------------------------------------------------------

    def _listen(self) -> None:
        self.backend.listen(self._on_event, self._listener_stop)

    def _on_event(self, message: str) -> None:
        if message == "assignment" or message == f"command {self.identity}":
            self._wake.set()
        elif message.startswith("released "):
            self.notifier.notify(message)

    def _command(self, command: dict[str, Any]) -> None:
        name = command.get("command")
        logger.info("remote command %r received (id %s)", name, command.get("id", "none"))
        if name == "quiet":
            self.request_quiet()
        elif name == "stop":
            self.request_stop()
        elif name == "dump":
            self.request_dump()
        else:
            logger.warning(
                "ignoring unknown remote command %r; known: %s", command, ", ".join(COMMANDS)
            )
            return
        self._ack_command(command)

    def _ack_command(self, command: dict[str, Any]) -> None:
        command_id = command.get("id")
        if not isinstance(command_id, str) or not command_id:
            return
        try:
            self.backend.ack_command(self.identity, command_id, self.kernel.time())
        except BackendError as exc:
            logger.warning(
                "could not acknowledge remote command %s (%s); it was carried out, the sender "
                "reports it as not acknowledged",
                command_id,
                exc,
            )

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGUSR1, self._on_quiet_signal)
        signal.signal(signal.SIGTSTP, self._on_quiet_signal)
        signal.signal(signal.SIGTTIN, self._on_dump_signal)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals_seen += 1
        if self._signals_seen > 1:
            # A second INT/TERM means "now": no waiting for iterations, no clean leave.
            os.write(2, b"second stop signal: exiting at once\n")
            os._exit(1)
        logger.info("received %s", signal.Signals(signum).name)
        self.request_stop()

    def _on_quiet_signal(self, signum: int, frame: FrameType | None) -> None:
        logger.info("received %s: going quiet, giving up every slot", signal.Signals(signum).name)
        self.request_quiet()

    def _on_dump_signal(self, signum: int, frame: FrameType | None) -> None:
        self.request_dump()

    def _leave(self) -> None:
        self._listener_stop.set()
        self.keeper.stop()
        if self._superseded:
            self.membership.revoke()  # the name is the successor's: nothing to hand over
            return
        if self.stable is not None:
            # Its slots stay assigned to its name, idle, for the next run of it.
            handoff(cast("Process", self), self.stable)  # the Manager, which is one
            self.membership.revoke()
            return
        try:
            self.backend.leave(self.identity)
            rebalance(self.backend)
        except BackendError as exc:
            logger.warning(
                "could not leave the group cleanly (%s); peers notice in %.0fs",
                exc,
                self.settings.process_expiry,
            )
        self.membership.revoke()
        logger.info("process %s left the group", self.identity)

    def _supersede_check(self) -> bool:
        """Before a heartbeat sent after this run's membership may have lapsed: True (and
        the run stops, cutting every iteration) when another run of its stable identity has
        taken the name over meanwhile; this run then never heartbeats as the name again."""
        assert self.stable is not None
        member = superseded(self.backend, self.stable, self.started_at)
        if member is None:
            return False
        self._superseded = True
        self._stop_requested = True
        cut = self.keeper.revoke_all("another run took this process's stable identity over")
        traits = member.traits
        logger.error(
            "process %s (instance %s): a newer run of stable identity %s (instance %s, pid %s "
            "on %s) has taken the name over (this one was cut off past its membership, or "
            "both run at once): this run stops %d running iteration(s) at their next record "
            "and exits without heartbeating as %s again",
            self.identity,
            self.stable.instance,
            self.stable.name,
            traits.get("instance"),
            traits.get("pid", "?"),
            traits.get("hostname", "?"),
            cut,
            self.stable.name,
        )
        self._wake.set()
        return True

    def _report_unreachable(self, exc: BackendError, failures: int) -> None:
        """Say plainly, once and then every 30 attempts, that the backend cannot be reached
        before this process ever joined: nothing runs until it answers."""
        if failures == 1 or failures % 30 == 0:
            logger.warning(
                "cannot reach %s; retrying every %gs until it answers (attempt %d); no job runs "
                "before this process has joined the group",
                str(exc).rstrip(". "),
                self.settings.heartbeat_interval,
                failures,
            )

    def _partitioned(self, job_id: str) -> bool:
        entry = self.jobs[job_id]
        chosen = entry.config.partitioned
        return bool(entry.job_class.partitioned) if chosen is None else chosen

    def _lease_lost(self, lease: Lease) -> None:
        logger.warning(
            "worker lock %s lost (%s); its iteration stops at the next record",
            lease.driver.context.name,
            lease.lost_reason,
        )

    # -- operations: state read by probes and metrics, command acknowledgements -------------

    def _observe_iteration(self, job_id: str, seconds: float) -> None:
        for observer in self.observers:
            observer.observe_iteration(job_id, seconds)

    @property
    def job_ids(self) -> list[str]:
        return list(self.jobs)

    @property
    def joined(self) -> bool:
        """This process has joined the group (a heartbeat of it has succeeded)."""
        return self._joined_once

    @property
    def quiet(self) -> bool:
        return self._quiet

    @property
    def stopping(self) -> bool:
        return self._stopping

    # -- what the heartbeat publishes -------------------------------------------------------

    def _traits(self) -> dict[str, Any]:
        return {
            "capacity": self.settings.max_threads,
            # A stopping run of a stable identity stays active for the assignment: its slots
            # wait for the next run of its name instead of moving to peers.
            "active": not (self._quiet or (self._stopping and self.stable is None)),
            "quiet": self._quiet,
            "stopping": self._stopping,
            "jobs": sorted(self.jobs),
            "defaults": {
                job_id: entry.config.workers if entry.config.workers is not None else 1
                for job_id, entry in self.jobs.items()
            },
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self.started_at,
            **self.settings.placement_traits(),
            **({"instance": self.stable.instance} if self.stable else {}),
            # Changes the state, so the group writes a new assignment (and with it readable
            # partitions) at once; dropped again once they are read.
            **({"partitions_unreadable": True} if self._partitions_unreadable else {}),
        }

    def _info(self) -> dict[str, Any]:
        return {
            "heartbeat_at": self.kernel.time(),
            **self.supervisor.info(),
            **self.autoscaler.info(),
        }
