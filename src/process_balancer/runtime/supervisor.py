"""Starts and stops this process's workers to match its slots, restarting failed ones."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..backends.base import Partition
from ..config import defaults
from .kernel import SYSTEM, Kernel
from .leases import LeaseKeeper
from .wakeups import Notifier
from .workers import kind_for, worker_class
from .workers.base import Worker, WorkerSpec
from .workers.shared import SharedResources

logger = logging.getLogger(__name__)

Slot = tuple[str, int]


@dataclass(frozen=True)
class SlotCounters:
    """Cumulative counters of one slot in this process, over every worker it has had."""

    running: bool
    iterations: int
    records: int
    lock_losses: int
    restarts: int
    errors: int
    #: Iterations that ran longer than the job's ``max_iteration_time``.
    overruns: int = 0
    #: A running iteration is longer than ``max_iteration_time`` now.
    overdue: bool = False


def overdue(worker: Worker, now: float) -> bool:
    """``worker``'s running iteration has gone past its job's ``max_iteration_time`` (on the
    wall clock ``now``, as ``iteration_started`` is)."""
    limit, started = worker.spec.max_iteration_time, worker.iteration_started
    return limit is not None and started is not None and now - started > limit


def restart_delay(
    failures: int, uniform: Callable[[float, float], float] = SYSTEM.uniform
) -> float:
    """Backoff before restarting a worker after ``failures`` consecutive failures."""
    delay = defaults.RESTART_BACKOFF_BASE * defaults.RESTART_BACKOFF_FACTOR ** max(0, failures - 1)
    return min(delay, defaults.RESTART_BACKOFF_MAX) * uniform(0.9, 1.1)


class Supervisor:
    """Owns the workers of one process, each of its job's kind. Only the manager thread calls
    its methods."""

    def __init__(
        self,
        *,
        make_spec: Callable[[str, int], WorkerSpec],
        keeper: LeaseKeeper,
        notifier: Notifier,
        wake: Callable[[], None],
        kernel: Kernel = SYSTEM,
    ) -> None:
        self._kernel = kernel
        self._make_spec = make_spec
        self._keeper = keeper
        self._notifier = notifier
        self._wake = wake
        self._workers: dict[Slot, Worker] = {}
        self._partitions: dict[str, Partition] = {}
        #: What workers of one kind share (the asyncio kind's event loop), closed at exit.
        self.shared = SharedResources(kernel)
        self._failures: dict[Slot, int] = {}
        self._restart_at: dict[Slot, float] = {}
        self.restarts: dict[Slot, int] = {}
        self.last_error: dict[Slot, str] = {}
        # Metrics: counters of reaped workers and job errors, read by the scrape thread.
        self._counters_lock = kernel.lock()
        self._retired: dict[Slot, tuple[int, int, int]] = {}
        self._retired_overruns: dict[Slot, int] = {}
        self._errors: dict[Slot, int] = {}

    # -- reconciliation ----------------------------------------------------------------------

    def reconcile(self, desired: set[Slot], *, why_stop: str) -> float | None:
        """Stop workers whose slot is not desired, start missing ones whose backoff is over.

        Returns the seconds until the next pending restart, or None if none is pending.
        """
        self._reap()
        for slot, worker in self._workers.items():
            if slot not in desired and not worker.stopping:
                logger.info("stopping job %s worker %d: %s", slot[0], slot[1], why_stop)
                worker.stop(why_stop)
        now = self._kernel.monotonic()
        next_due: float | None = None
        for slot in sorted(desired):
            if slot in self._workers:
                continue
            due = self._restart_at.get(slot, 0.0)
            if due > now:
                next_due = due - now if next_due is None else min(next_due, due - now)
                continue
            self._restart_at.pop(slot, None)
            self._start(slot)
        for slot in list(self._restart_at):
            if slot not in desired:
                del self._restart_at[slot]
        return next_due

    def set_partitions(self, partitions: dict[str, Partition]) -> None:
        """Every job's count and generation from the assignment, told to the running
        workers (a partitioned job's running iteration of an older generation is cut)."""
        self._partitions = partitions
        for (job_id, _), worker in self._workers.items():
            worker.set_partition(partitions.get(job_id))

    def _start(self, slot: Slot) -> None:
        spec = self._make_spec(*slot)
        worker_type = worker_class(kind_for(spec.job_class, spec.kind))
        worker = worker_type(
            spec,
            keeper=self._keeper,
            notifier=self._notifier,
            on_exit=self._exited,
            kernel=self._kernel,
            shared=self.shared,
        )
        worker.set_partition(self._partitions.get(slot[0]))
        self._workers[slot] = worker
        logger.info("starting job %s worker %d", slot[0], slot[1])
        worker.start()

    def _exited(self, worker: Worker) -> None:
        self._wake()

    def _reap(self) -> None:
        for slot, worker in list(self._workers.items()):
            if worker.is_alive() or worker.outcome is None:
                continue
            self._retire(slot, worker)
            if worker.succeeded:
                self._failures.pop(slot, None)
            if worker.outcome == "failed":
                failures = self._failures.get(slot, 0) + 1
                self._failures[slot] = failures
                delay = restart_delay(failures, self._kernel.uniform)
                self._restart_at[slot] = self._kernel.monotonic() + delay
                self.restarts[slot] = self.restarts.get(slot, 0) + 1
                self.last_error[slot] = worker.error or "unknown error"
                self._errors[slot] = self._errors.get(slot, 0) + 1
                logger.warning(
                    "job %s worker %d failed (%s); restart %d in %.1fs",
                    slot[0],
                    slot[1],
                    worker.error,
                    failures,
                    delay,
                )
            elif worker.outcome == "aborted":
                self._restart_at[slot] = self._kernel.monotonic() + defaults.ABORT_RESTART_DELAY
                self.restarts[slot] = self.restarts.get(slot, 0) + 1
            else:
                logger.info("job %s worker %d stopped (%s)", slot[0], slot[1], worker.stop_reason)

    # -- shutdown ----------------------------------------------------------------------------

    def stop_all(self, why: str) -> None:
        self.reconcile(set(), why_stop=why)

    def alive(self) -> list[Worker]:
        return [w for w in self._workers.values() if w.is_alive()]

    def close(self) -> None:
        """The process exits: close what the workers shared (the asyncio event loop)."""
        self.shared.close()

    # -- state -------------------------------------------------------------------------------

    def running(self) -> dict[str, list[int]]:
        """Slots with a live worker that is not stopping, per job."""
        result: dict[str, list[int]] = {}
        for (job_id, index), worker in sorted(self._workers.items()):
            if worker.is_alive() and not worker.stopping:
                result.setdefault(job_id, []).append(index)
        return result

    def info(self) -> dict[str, Any]:
        """This process's part of its heartbeat info: running slots, each slot's state and
        what the worker kinds report (the asyncio event loop's lag)."""
        return {"running": self.running(), "slots": self.describe(), **self.shared.describe()}

    def describe(self) -> dict[str, Any]:
        """Per-slot state for the process's heartbeat info."""
        slots: dict[str, dict[str, Any]] = {}
        keys = set(self._workers) | set(self.restarts)
        for slot in sorted(keys):
            worker = self._workers.get(slot)
            entry: dict[str, Any] = {
                "restarts": self.restarts.get(slot, 0),
                "last_error": self.last_error.get(slot),
            }
            if worker is not None:
                entry.update(
                    state="stopping" if worker.stopping else "running",
                    iterations=worker.iterations,
                    records=worker.records,
                    lock_losses=worker.lock_losses,
                    iteration_started=worker.iteration_started,
                    max_iteration_time=worker.spec.max_iteration_time,
                    overdue=overdue(worker, self._kernel.time()),
                    overruns=self._retired_overruns.get(slot, 0) + worker.overruns,
                    child_pid=getattr(worker, "child_pid", None),
                )
            elif slot in self._restart_at:
                entry["state"] = "backoff"
            else:
                entry["state"] = "idle"
            slots[f"{slot[0]}:{slot[1]}"] = entry
        return slots

    # -- metrics (called from the scrape thread) ---------------------------------------------

    def _retire(self, slot: Slot, worker: Worker) -> None:
        """Forget an exited worker, keeping its counts, so the totals never go backwards."""
        with self._counters_lock:
            iterations, records, losses = self._retired.get(slot, (0, 0, 0))
            self._retired[slot] = (
                iterations + worker.iterations,
                records + worker.records,
                losses + worker.lock_losses,
            )
            self._retired_overruns[slot] = self._retired_overruns.get(slot, 0) + worker.overruns
            del self._workers[slot]

    def counters(self) -> dict[Slot, SlotCounters]:
        """Totals per slot this process has run: live workers plus exited ones."""
        with self._counters_lock:
            workers = dict(self._workers)
            retired = dict(self._retired)
            overruns = dict(self._retired_overruns)
        now = self._kernel.time()
        restarts = dict(self.restarts)
        errors = dict(self._errors)
        result = {}
        for slot in set(workers) | set(retired) | set(restarts):
            worker = workers.get(slot)
            iterations, records, losses = retired.get(slot, (0, 0, 0))
            if worker is not None:
                iterations += worker.iterations
                records += worker.records
                losses += worker.lock_losses
            result[slot] = SlotCounters(
                running=worker is not None and worker.is_alive() and not worker.stopping,
                iterations=iterations,
                records=records,
                lock_losses=losses,
                restarts=restarts.get(slot, 0),
                errors=errors.get(slot, 0),
                overruns=overruns.get(slot, 0) + (worker.overruns if worker is not None else 0),
                overdue=worker is not None and overdue(worker, now),
            )
        return result
