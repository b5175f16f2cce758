"""The iteration protocol every worker kind shares, written once.

A worker runs one job instance for one slot, iteration after iteration: ``before_perform`` ->
the worker lock -> the job's iteration contexts entered -> ``lock_records`` ->
``process_record`` per record (cut at a record boundary when the lock is lost or the slot must
stop) -> ``unlock_records`` -> the contexts exited -> the lock released -> ``after_perform`` ->
the job's sleep or abort. A worker kind decides where that loop runs (a thread, an event
loop, a child process) and how the job's methods are called (:meth:`Worker.call`); the lock
(taken by a plan, ``plan.py``), the lease and the bookkeeping are the same for all.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from ...backends.base import BackendError, CorruptStateError, Partition
from ...job import Base, IterationContext, JobControl
from ...locks.base import LockContext, LockDriver
from ..kernel import SYSTEM, Kernel
from ..leases import Lease, LeaseKeeper
from ..wakeups import Notifier
from .acquire import ACQUIRE_RETRY_MAX as ACQUIRE_RETRY_MAX
from .acquire import acquire_plan
from .contexts import enter_all, iteration_contexts
from .plan import Plan, run_plan
from .shared import SharedResources

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs that does not change while it runs."""

    job_id: str
    worker_index: int
    job_class: type[Base]
    options: dict[str, Any]
    driver_class: type[LockDriver]
    lock_context: LockContext
    acquire_timeout: float
    #: Called with (job_id, seconds) after every iteration that held the lock (for metrics).
    on_iteration: Callable[[str, float], None] | None = None
    #: The worker kind running the slot (the job's ``worker:`` option; None: by its class).
    kind: str | None = None
    #: Seconds after which a running iteration is overdue (``max_iteration_time``); None: never.
    max_iteration_time: float | None = None
    #: A change of the job's count is a barrier (``partitioned``): the lock is taken under
    #: the job's generation, and a new generation cuts the running iteration.
    partitioned: bool = False


class Worker(abc.ABC):
    """Runs ``spec.job_class`` for one slot until stopped, aborted or failed.

    ``outcome`` ends as ``"stopped"`` (asked to stop), ``"aborted"`` (the job called
    ``status_abort()``) or ``"failed"`` (the job raised; ``error`` holds the text).
    Subclasses run :meth:`run_slot` somewhere (:meth:`start`) and may change how the job's
    methods are called (:meth:`call`); they must call ``on_exit`` once when the slot ends,
    which :meth:`run_slot` does.
    """

    #: The name a job's ``worker:`` option gives this kind.
    kind: ClassVar[str]

    def __init__(
        self,
        spec: WorkerSpec,
        *,
        keeper: LeaseKeeper,
        notifier: Notifier,
        on_exit: Callable[[Worker], None],
        kernel: Kernel = SYSTEM,
        shared: SharedResources | None = None,
    ) -> None:
        self.spec = spec
        self.kernel = kernel
        #: What this process's workers share per kind (see :class:`SharedResources`).
        self.shared = shared if shared is not None else SharedResources(kernel)
        self._monotonic = kernel.monotonic
        self._keeper = keeper
        self._notifier = notifier
        self._on_exit = on_exit
        self._stop_event = kernel.event()
        self._wake = kernel.event()
        self._halt = False  # end the worker after the current iteration
        self._cut = False  # end the current iteration at the next record boundary
        self._lease: Lease | None = None  # the lock the current iteration holds
        self.outcome: str | None = None
        self.error: str | None = None
        self.stop_reason = ""
        self.iterations = 0
        self.records = 0
        self.lock_losses = 0
        self.skipped = 0
        self.overruns = 0  # iterations that ran longer than max_iteration_time
        self.succeeded = False
        self.iteration_started: float | None = None
        self.started_at = kernel.time()
        #: What the job tells this worker (sleep, abort) and may read of it (lease left).
        self.control = JobControl(self._stop_event)
        self._contexts: list[IterationContext] = []
        #: The job's count and generation as this process last heard them (set by the
        #: supervisor), and those the running (or last) iteration was granted under.
        self.partition: Partition | None = None
        self.granted: Partition | None = None

    @property
    def slot(self) -> tuple[str, int]:
        return (self.spec.job_id, self.spec.worker_index)

    @abc.abstractmethod
    def start(self) -> None:
        """Begin running :meth:`run_slot` (on a thread, an event loop, ...)."""

    def stop(self, reason: str) -> None:
        """Ask the worker to stop at the next record boundary (or wait, or sleep)."""
        if not self._stop_event.is_set():
            self.stop_reason = reason
        self._halt = True
        self._cut = True
        self._stop_event.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def set_partition(self, partition: Partition | None) -> None:
        """The job's count or generation changed: the next iteration runs by the new ones. A
        partitioned job's running iteration, granted under another generation, is cut at
        the next record boundary (its lock is released, then taken under the new one)."""
        if partition == self.partition:
            return
        self.partition = partition
        if self.spec.partitioned:
            if self._lease is not None and self.granted != partition:
                self._cut = True
            self._wake.set()

    @abc.abstractmethod
    def is_alive(self) -> bool:
        """The slot's loop has not ended yet."""

    @abc.abstractmethod
    def join(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds for the slot's loop to end."""

    def call(self, method: Callable[..., T], *args: Any) -> T:
        """Call one of the job's methods (a kind whose jobs run elsewhere overrides it)."""
        return method(*args)

    def make_job(self) -> Base:
        spec = self.spec
        self._contexts = iteration_contexts(spec.job_class, spec.options)
        return spec.job_class(
            job_id=spec.job_id,
            worker_index=spec.worker_index,
            options=spec.options,
            control=self.control,
        )

    # -- the protocol ------------------------------------------------------------------------

    def run_slot(self) -> None:
        """Iterations until stopped, aborted or failed; then ``on_exit``."""
        control = self.control
        try:
            job = self.make_job()
            while not self._halt:
                self._iteration(job)
                if self._aborted(job):
                    return
                pause = control.sleep_for
                if pause:
                    self._stop_event.wait(pause)
            self.outcome = "stopped"
        except Exception as exc:
            self._failed(exc)
        finally:
            self._on_exit(self)

    def _aborted(self, job: Base) -> bool:
        if not self.control.abort:
            return False
        self.outcome = "aborted"
        logger.info("%s: status_abort() called; a fresh worker starts later", job)
        return True

    def _failed(self, exc: BaseException) -> None:
        self.outcome = "failed"
        self.error = f"{type(exc).__name__}: {exc}"
        logger.exception(
            "job %s worker %d raised; the worker restarts after a backoff",
            self.spec.job_id,
            self.spec.worker_index,
        )

    def _iteration(self, job: Base) -> None:
        self.control.sleep_for = None
        try:
            self.call(job.before_perform)
            lease = self._acquire()
            if lease is None:
                self.skipped += 1
                return
            began = self._begin(job, lease)
            try:
                self._process(job, lease)
            finally:
                self._end(job, lease, began)
            self.iterations += 1
            self.succeeded = True
        finally:
            self.call(job.after_perform)

    def _begin(self, job: Base, lease: Lease) -> float:
        """The lock is held: tell the job its token and lease; returns the start time."""
        job.fencing_token = lease.fence
        if self.granted is not None:
            job.worker_count, job.generation = self.granted.count, self.granted.generation
        self.control.lease_remaining = lease.remaining
        self.iteration_started = self.kernel.time()
        return self._monotonic()

    def _end(self, job: Base, lease: Lease, began: float) -> None:
        """The iteration is over: release the lock (a backend call) and count it."""
        self.iteration_started = None
        self.control.lease_remaining = None
        self._lease = None
        self._keeper.drop(lease)
        self._release(lease)
        if lease.lost:
            self.lock_losses += 1
            logger.warning(
                "job %s worker %d lost its worker lock (%s); the iteration was stopped "
                "and unlock_records ran",
                job.job_id,
                job.worker_index,
                lease.lost_reason,
            )
        took = self._monotonic() - began
        limit = self.spec.max_iteration_time
        if limit is not None and took > limit:
            self.overruns += 1
        if self.spec.on_iteration is not None:
            self.spec.on_iteration(job.job_id, took)

    def _ran_out(self, lease: Lease) -> bool:
        """The lease ran out before the iteration began (frozen after the grant): claim nothing."""
        if lease.lost or self._monotonic() >= lease.deadline - lease.margin:
            if not lease.lost:
                lease.lost = True
                lease.lost_reason = "it ran out before the iteration began"
            return True
        return False

    def _outlived(self, lease: Lease) -> None:
        """After the iteration: a lease whose deadline passed unrenewed counts as lost."""
        if not lease.lost and self._monotonic() >= lease.deadline:
            lease.lost = True
            lease.lost_reason = "its deadline passed before it could be renewed"

    def _process(self, job: Base, lease: Lease) -> None:
        if self._ran_out(lease):
            return
        if self._contexts:
            with enter_all(self._contexts, job):
                self._records(job)
        else:
            self._records(job)
        self._outlived(lease)

    def _records(self, job: Base) -> None:
        primary: BaseException | None = None
        try:
            records = self.call(job.lock_records)
            if records is not None:
                process = job.process_record
                call = self.call
                count = 0
                try:
                    for record in records:
                        if self._cut:
                            break
                        call(process, record)
                        count += 1
                finally:
                    self.records += count
        except BaseException as exc:
            primary = exc
            raise
        finally:
            try:
                self.call(job.unlock_records)
            except Exception:
                if primary is None:
                    raise
                self._unlock_failed(job)

    def _unlock_failed(self, job: Base) -> None:
        logger.exception("job %s worker %d: unlock_records raised after an error", *self.slot)

    def _acquire(self) -> Lease | None:
        return run_plan(self._acquire_plan(), self._wake.wait)

    def _acquire_plan(self) -> Plan[Lease | None]:
        return acquire_plan(self)

    def _attempt(self, driver: LockDriver) -> int | None:
        """One try at the lock: its fencing token, or None (busy, or the backend failed)."""
        try:
            return driver.try_acquire()
        except CorruptStateError as exc:
            logger.error("job %s worker %d: %s", *self.slot, exc)
        except BackendError as exc:
            logger.warning(
                "job %s worker %d: could not reach the backend to take the worker "
                "lock (%s); retrying",
                *self.slot,
                exc,
            )
        return None

    def _lease_lost(self, lease: Lease) -> None:
        # A renewal answer may arrive after its iteration ended: it must not cut the next one.
        if lease is self._lease:
            self._cut = True

    def _release(self, lease: Lease) -> None:
        try:
            with lease.renew_lock:
                lease.driver.release()
        except BackendError as exc:
            logger.warning(
                "job %s worker %d: could not release the worker lock (%s); retrying in the "
                "background",
                self.spec.job_id,
                self.spec.worker_index,
                exc,
            )
            self._keeper.release_later(lease)
            return
        except BaseException:
            lease.driver.close()
            raise
        lease.driver.close()
