"""The process manager: heartbeat loop, slot reconciliation, signals and remote commands."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..backends.base import Backend, BackendError, CorruptStateError, Partition
from ..balancing.rebalance import rebalance
from ..config.schema import JobConfig, Settings
from ..job import Base
from ..locks import LockContext, resolve_driver
from .autoscale import Autoscaler, autoscaled_jobs
from .clock_watch import ServerClockWatch
from .control import Controls, make_identity, thread_dump
from .kernel import SYSTEM, Kernel
from .leases import LeaseKeeper, Membership
from .observer import Observer
from .stable import StableRun, await_name
from .supervisor import Supervisor
from .wakeups import Notifier
from .workers.base import WorkerSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobEntry:
    config: JobConfig
    job_class: type[Base]


class Manager(Controls):
    """Runs one process of the group until it is stopped.

    ``handle_signals=False`` leaves signal handling to the embedding program, which then calls
    :meth:`request_stop` / :meth:`request_quiet` itself.
    """

    def __init__(
        self,
        settings: Settings,
        job_classes: dict[str, type[Base]],
        backend: Backend,
        *,
        identity: str | None = None,
        handle_signals: bool = True,
        observers: Sequence[Observer] = (),
        kernel: Kernel = SYSTEM,
    ) -> None:
        self.settings = settings
        #: Clocks, threads and randomness (see runtime/kernel.py); simulated in tests.
        self.kernel = kernel
        self._monotonic = kernel.monotonic
        self.backend = backend
        #: A stable identity's run (its name and this run's instance), or None.
        stable = settings.stable_identity
        self.stable = StableRun.start(stable, kernel.token) if stable else None
        self.identity = self.stable.name if self.stable else identity or make_identity()
        #: The holder of this run's locks: ``NAME#<instance>`` with a stable identity.
        self.holder = self.stable.holder if self.stable else self.identity
        self.jobs = {
            job_id: JobEntry(config, job_classes[job_id])
            for job_id, config in settings.jobs.items()
        }
        self._drivers = {
            job_id: resolve_driver(entry.job_class.lock_driver, job_id=job_id)
            for job_id, entry in self.jobs.items()
        }
        for job_id, driver in self._drivers.items():
            driver.check(job_id, self.jobs[job_id].config.options, backend)
            if self._partitioned(job_id) and not driver.supports_gate:
                raise ValueError(
                    f"job {job_id!r} is partitioned, which needs a lock driver that takes its "
                    f"lock under the job's generation; {driver.__name__} does not: use "
                    "lock_driver 'simple_redis' (the default) or set partitioned: false"
                )
        self._handle_signals = handle_signals
        self._wake = kernel.event()
        self._listener_stop = kernel.event()
        self._stop_requested = False
        self._signals_seen = 0
        self._quiet = False
        self._stopping = False
        self._dump_requested = False
        #: Another run of this stable identity took the name over: stop, never heartbeat.
        self._superseded = False
        self._name_contested = False
        self._traits_sent: dict[str, Any] = {}
        self._joined_once = False
        self._seen_assignment_version = -1
        self._slots: dict[str, tuple[int, ...]] = {}
        #: Every job's count and generation, as the stored assignment has them.
        self._partitions: dict[str, Partition] = {}
        #: The stored partitions could not be read: a trait asks for a new assignment.
        self._partitions_unreadable = False
        self._stale_since: float | None = None
        #: The group's incarnation and the highest state version seen in it: reported with
        #: every heartbeat so that a backend that lost or rolled back the state is noticed.
        self.incarnation = ""
        self._max_version = 0
        self._clock = ServerClockWatch()
        self._corrupt_reported: str | None = None
        self.started_at = kernel.time()
        self.membership = Membership()
        self.notifier = Notifier(kernel)
        self.keeper = LeaseKeeper(self.membership, self._lease_lost, kernel=kernel)
        self.supervisor = Supervisor(
            make_spec=self._make_spec,
            keeper=self.keeper,
            notifier=self.notifier,
            wake=self._wake.set,
            kernel=kernel,
        )
        jobs = autoscaled_jobs(settings.jobs, job_classes)
        self.autoscaler = Autoscaler(backend, self.holder, jobs, kernel=kernel)
        #: Told of heartbeats and iterations (metrics, probes); see runtime/observer.py.
        self.observers = list(observers)

    # -- main loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Join the group, run slots until stopped, leave. Returns the exit code."""
        started: list[Observer] = []
        try:
            for observer in self.observers:
                observer.start()
                started.append(observer)
            return self._run()
        finally:
            self.autoscaler.stop()
            self.supervisor.close()
            for observer in started:
                observer.close()

    def _run(self) -> int:
        if self._handle_signals:
            self._install_signal_handlers()
        listener = self.kernel.thread(self._listen, "pb-listener")
        listener.start()
        self.keeper.start()
        self.autoscaler.start()
        logger.info(
            "process %s joining group %r on %s with max_threads=%d; jobs: %s",
            self.identity,
            self.settings.namespace,
            self.backend.display_url,
            self.settings.max_threads,
            ", ".join(sorted(self.jobs)) or "(none)",
        )
        if self.stable is not None and not await_name(self, self.stable):
            self._listener_stop.set()
            self.keeper.stop()
            return 0
        stop_deadline: float | None = None
        failures = 0
        while True:
            if self._dump_requested:
                self._dump_requested = False
                dump = thread_dump() + self.supervisor.shared.dump()
                logger.warning("thread dump of %s:\n%s", self.identity, dump)
            if self._stop_requested and not self._stopping:
                self._stopping = True
                stop_deadline = self._monotonic() + self.settings.shutdown_timeout
                logger.info(
                    "stopping: giving up all slots, waiting up to %.0fs for running iterations",
                    self.settings.shutdown_timeout,
                )
                self.supervisor.stop_all("process stopping")
            self._wake.clear()
            timeout = self.settings.heartbeat_interval
            try:
                next_restart, next_expiry = self._beat()
                if failures:
                    logger.info("the backend answers again after %d failed heartbeat(s)", failures)
                failures = 0
                if next_restart is not None:
                    timeout = min(timeout, next_restart)
                if next_expiry is not None:
                    # Beat again just after the soonest peer deadline: if that peer is dead,
                    # this beat prunes it and its slots move at once.
                    timeout = min(timeout, next_expiry + 0.01)
            except CorruptStateError as exc:
                # Not retried faster than the interval: only a person (or `repair`) fixes it.
                failures += 1
                if str(exc) != self._corrupt_reported:
                    self._corrupt_reported = str(exc)
                    logger.error(
                        "heartbeat refused: %s; this process runs no slot until it can read "
                        "the group's state again",
                        exc,
                    )
            except BackendError as exc:
                failures += 1
                timeout = min(self.settings.heartbeat_interval, 0.1 * 2**failures)
                if not self._joined_once:
                    self._report_unreachable(exc, failures)
                else:
                    logger.warning(
                        "heartbeat failed (%s); retrying in %.1fs, running iterations stop in "
                        "%.1fs unless it succeeds",
                        exc,
                        timeout,
                        max(0.0, self.membership.valid_until - self._monotonic()),
                    )
            if self._stopping:
                alive = self.supervisor.alive()
                if not alive:
                    break
                assert stop_deadline is not None
                if self._monotonic() >= stop_deadline:
                    logger.warning(
                        "shutdown_timeout of %.0fs passed; exiting with %d iteration(s) still "
                        "running: %s. This process does not leave the group: its membership "
                        "expires in %.1fs, and peers take its slots over after that plus "
                        "takeover_grace, never while these records could still be running",
                        self.settings.shutdown_timeout,
                        len(alive),
                        ", ".join(f"{w.spec.job_id}:{w.spec.worker_index}" for w in alive),
                        max(0.0, self.membership.valid_until - self._monotonic()),
                    )
                    self._listener_stop.set()
                    self.keeper.stop()
                    return 0
                timeout = min(timeout, 0.05)
            self._wake.wait(timeout)
        self._leave()
        return 0

    @property
    def _hold(self) -> float:
        """Seconds a new incarnation grants no worker lock: the holders of the old one stop
        by then, their memberships having lapsed (each job adds its takeover_grace)."""
        return self.settings.process_expiry

    def _beat(self) -> tuple[float | None, float | None]:
        """One heartbeat; returns (seconds to the next worker restart, to the next expiry)."""
        sent_at = self._monotonic()
        # Decided before sending: a heartbeat sent this late may reach the backend after the
        # membership expired there, and a peer may have taken over the slots meanwhile.
        late = self._joined_once and self.membership.may_have_lapsed(sent_at, self.keeper.MARGIN)
        doubt = late or self._name_contested
        if self._superseded or (doubt and self.stable is not None and self._supersede_check()):
            return self.supervisor.reconcile(set(), why_stop="superseded"), None
        traits = self._traits()
        result = self.backend.heartbeat(
            self.identity,
            traits=traits,
            info=self._info(),
            expiry=self.settings.process_expiry,
            seen_assignment_version=self._seen_assignment_version,
            known_incarnation=self.incarnation,
            known_version=self._max_version,
            hold=self._hold,
        )
        received_at = self._monotonic()
        self._corrupt_reported = None
        reasons = []
        if self._joined_once and result.joined:
            reasons.append(
                f"its membership had expired (no heartbeat for {self.settings.process_expiry:g}s)"
            )
        elif late:
            reasons.append("its heartbeat was sent too late to keep its membership")
        if self.incarnation and result.incarnation != self.incarnation:
            reasons.append(
                "the backend lost or replaced the group's state "
                f"({result.new_incarnation or 'a new incarnation began'})"
            )
            self._clock.forget()
        incarnation = result.incarnation
        step = self._clock.observe(result.server_time, sent_at, received_at)
        if step > 0:
            reasons.append(f"the backend's clock jumped {step:.1f}s forward")
            incarnation = self.backend.reset_incarnation(incarnation, self._hold)
            self._clock.forget()
        elif step < 0:
            logger.warning(
                "the backend's clock jumped %.1fs back; memberships and locks live longer on "
                "it until it catches up (crashed processes are noticed later), nothing else",
                -step,
            )
        # Another run of this stable identity heartbeats too: each of its heartbeats writes
        # other traits, so this one changes the state although nothing of it changed.
        self._name_contested = bool(
            self.stable is not None
            and result.changed
            and not (reasons or result.joined)
            and traits == self._traits_sent
        )
        self._traits_sent = traits
        if reasons:
            # Before the membership is extended: every iteration stops, and the locks are
            # taken afresh, by this process or by a peer that has taken them over.
            cut = self.keeper.revoke_all("; ".join(reasons))
            logger.warning(
                "process %s: %s; %d running iteration(s) stop at their next record and take "
                "their worker locks afresh",
                self.identity,
                "; ".join(reasons),
                cut,
            )
        if incarnation != self.incarnation:
            self._max_version = 0
            if self.incarnation and result.slots is None:
                # Versions of the new incarnation may meet the one this process saw in the
                # old: the backend compared against it and sent no slots. Ask again.
                self._seen_assignment_version = -1
                self._wake.set()
            self.incarnation = incarnation
        self._max_version = max(self._max_version, result.version, result.assignment_version)
        self.membership.extend(sent_at, self.settings.process_expiry)
        for observer in self.observers:
            observer.observe_heartbeat(received_at - sent_at)
        self.keeper.refresh()
        self._joined_once = True
        for command in result.commands:
            self._command(command)
        if result.slots is not None:
            self._slots = result.slots
            self._partitions = result.partitions or {}
            self._partitions_unreadable = result.partitions is None
            self._seen_assignment_version = result.assignment_version
        if result.version != result.assignment_version:
            now = self._monotonic()
            if self._stale_since is None:
                self._stale_since = now
            # The process whose heartbeat changed the state computes the new assignment at
            # once; the others step in only if it has not appeared one interval later.
            if result.changed or now - self._stale_since >= self.settings.heartbeat_interval:
                self._rebalance()
        else:
            self._stale_since = None
        active = not (self._quiet or self._stopping)
        self.autoscaler.set_active(active)
        desired = set()
        if active:
            desired = {
                (job_id, index)
                for job_id, indexes in self._slots.items()
                if job_id in self.jobs
                for index in indexes
            }
        why = (
            "process stopping"
            if self._stopping
            else "process quiet"
            if self._quiet
            else ("slot moved to another process")
        )
        self.supervisor.set_partitions(self._partitions)
        return self.supervisor.reconcile(desired, why_stop=why), result.next_expiry

    def _rebalance(self) -> None:
        try:
            written = rebalance(self.backend)
        except CorruptStateError as exc:
            logger.error("cannot rebalance: %s", exc)
            return
        if written is not None:
            version, assignment, partitions = written
            self._slots = dict(assignment.for_member(self.identity))
            self._partitions = partitions
            self._partitions_unreadable = False
            self._seen_assignment_version = version
            self._stale_since = None
            logger.info("assignment %d stored; this process runs %s", version, self._slots)

    def _make_spec(self, job_id: str, index: int) -> WorkerSpec:
        entry = self.jobs[job_id]
        context = LockContext(
            backend=self.backend,
            namespace=self.settings.namespace,
            job_id=job_id,
            worker_index=index,
            holder=self.holder,
            ttl=entry.config.runtime_lock_timeout,
            options=entry.config.options,
            grace=entry.config.takeover_grace,
        )
        return WorkerSpec(
            job_id=job_id,
            worker_index=index,
            job_class=entry.job_class,
            options=entry.config.options,
            driver_class=self._drivers[job_id],
            lock_context=context,
            acquire_timeout=entry.config.lock_acquire_timeout,
            on_iteration=self._observe_iteration if self.observers else None,
            kind=entry.config.worker,
            max_iteration_time=entry.config.max_iteration_time,
            partitioned=self._partitioned(job_id),
        )
