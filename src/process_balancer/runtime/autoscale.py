"""Autoscaling: a job's ``desired_workers()`` sets its worker count, evaluated by one process
of the group at a time.

For each job with ``autoscale:`` every process may evaluate, but only the holder of the lock
``<job_id>:autoscale`` does (a worker slot's lock is ``<job_id>:<index>``, whose index is a
number, so the names never meet). The lock is the backend's worker lock: it names its
holder, so when the holder dies a peer takes it over ``takeover_grace`` after the holder's
membership expired; the holder renews it at every pass and releases it when its process goes
quiet or stops. The holder calls ``desired_workers()`` on an instance of the job made for
it (``worker_index`` -1: it holds no slot), clamps the answer to ``[min, max]`` and writes
the count as ``process-balancer scale`` does, unless the job is paused: the operator's pause
wins until ``resume``, even one that lands while ``desired_workers()`` runs (the write checks
it in the same atomic step: ``Backend.set_count_unless_paused``). Each decision is published
in the process's heartbeat info, where ``status`` reads it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import Acquired, Backend, BackendError
from ..balancing.rebalance import config_counts, rebalance
from ..config import defaults
from ..config.autoscale import AutoscaleConfig
from ..config.schema import JobConfig
from ..job import Base
from .kernel import SYSTEM, Kernel, ThreadLike

logger = logging.getLogger(__name__)

#: The suffix of the lock that chooses a job's evaluating process.
LOCK_SUFFIX = "autoscale"


def lock_name(job_id: str) -> str:
    return f"{job_id}:{LOCK_SUFFIX}"


@dataclass(frozen=True)
class AutoscaledJob:
    """What the autoscaler needs of one job."""

    job_id: str
    job_class: type[Base]
    rule: AutoscaleConfig
    options: Mapping[str, Any]
    #: The job's config ``workers`` (else 1): its count while none is set at runtime.
    default: int
    #: The job's ``max_workers``: the ceiling the backend checks the count against.
    maximum: int
    grace: float

    @property
    def lock_ttl(self) -> float:
        return max(defaults.AUTOSCALE_LOCK_TTL, 3 * self.rule.interval)


def autoscaled_jobs(
    configs: Mapping[str, JobConfig], classes: Mapping[str, type[Base]]
) -> list[AutoscaledJob]:
    """The jobs of a config that set ``autoscale:``."""
    jobs = []
    for job_id, config in sorted(configs.items()):
        if config.autoscale is not None:
            jobs.append(
                AutoscaledJob(
                    job_id=job_id,
                    job_class=classes[job_id],
                    rule=config.autoscale,
                    options=config.options,
                    default=config.workers if config.workers is not None else 1,
                    maximum=config.max_workers,
                    grace=config.takeover_grace,
                )
            )
    return jobs


@dataclass
class _JobState:
    held: Acquired | None = None
    instance: Base | None = None
    #: monotonic: the next evaluation (holder) or the next attempt to take the lock.
    due: float = 0.0
    #: monotonic: the last change this process made, or when it began evaluating.
    since: float = 0.0
    reported: str | None = None
    paused: bool = False
    last: dict[str, Any] | None = None
    last_change: dict[str, Any] | None = None
    published: dict[str, Any] = field(default_factory=dict)


class Autoscaler:
    """Evaluates the autoscaled jobs of one process on a thread of its own."""

    def __init__(
        self,
        backend: Backend,
        identity: str,
        jobs: list[AutoscaledJob],
        *,
        kernel: Kernel = SYSTEM,
    ) -> None:
        self.backend = backend
        self.identity = identity
        self.jobs = jobs
        self.kernel = kernel
        self._states = {job.job_id: _JobState() for job in jobs}
        self._active = False
        self._wake = kernel.event()
        self._stop = kernel.event()
        self._thread: ThreadLike | None = None

    # -- the manager's side --------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread; a process without autoscaled jobs starts none."""
        if self.jobs and self._thread is None:
            self._thread = self.kernel.thread(self._run, "pb-autoscale")
            self._thread.start()

    def set_active(self, active: bool) -> None:
        """Evaluate only while this process is a joined, non-quiet, non-stopping member; a
        process that becomes inactive releases its locks at once."""
        if self.jobs and active != self._active:
            self._active = active
            self._wake.set()

    def stop(self) -> None:
        self._active = False
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            # A desired_workers() that hangs must not hold the process's exit up for long.
            self._thread.join(5.0)

    def info(self) -> dict[str, Any]:
        """This process's part of its heartbeat info: each autoscaled job's bounds, whether
        this process evaluates it, and its last decision and change."""
        if not self.jobs:
            return {}
        return {"autoscale": {job.job_id: self._states[job.job_id].published for job in self.jobs}}

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            wait = self.step()
            self._wake.wait(wait)
        self._release_all()

    def step(self) -> float:
        """One pass over the jobs: take, renew or release each lock and evaluate the jobs
        that are due. Returns the seconds until the next pass is needed."""
        if not self._active:
            self._release_all()
            return defaults.AUTOSCALE_LOCK_TTL
        now = self.kernel.monotonic()
        waits = []
        for job in self.jobs:
            state = self._states[job.job_id]
            try:
                self._step_job(job, state, now)
            except BackendError as exc:
                self._report(job, state, f"the backend failed ({exc}); retrying in an interval")
                state.due = now + job.rule.interval
            waits.append(max(0.0, state.due - now))
            self._publish(job, state)
        return min(waits, default=defaults.AUTOSCALE_LOCK_TTL)

    def _step_job(self, job: AutoscaledJob, state: _JobState, now: float) -> None:
        if state.held is not None and now >= state.due:
            self._renew(job, state)
        if state.held is None:
            if now < state.due:
                return
            state.held = self.backend.lock_acquire(
                lock_name(job.job_id), self.identity, job.lock_ttl, grace=job.grace
            )
            if state.held is None:
                # Another process evaluates; try again an interval later (jittered, so the
                # waiting processes do not all ask at once).
                state.due = now + job.rule.interval * self.kernel.uniform(0.9, 1.1)
                return
            logger.info(
                "autoscale: process %s evaluates job %s (min %d, max %d, every %gs)",
                self.identity,
                job.job_id,
                job.rule.min,
                job.rule.max,
                job.rule.interval,
            )
            state.since = now
        if now >= state.due:
            state.due = now + job.rule.interval
            self.evaluate(job, state, now)

    def evaluate(self, job: AutoscaledJob, state: _JobState, now: float) -> None:
        """Call ``desired_workers()`` and write the clamped count if it differs."""
        try:
            desired = self._desired(job, state)
        except Exception as exc:  # the job's code: reported, never fatal
            self._decide(state, "error", error=f"desired_workers() raised {exc!r}")
            self._report(job, state, f"desired_workers() raised {exc!r}; skipped")
            return
        if desired is None:
            return
        if job.job_id in self.backend.paused_counts():
            self._paused(job, state, desired)
            return
        if state.paused:
            logger.info("autoscale: job %s was resumed; scaling it again", job.job_id)
            state.paused = False
        target = job.rule.clamp(desired)
        current = self.backend.get_count(job.job_id)
        if current is None:
            current = config_counts(self.backend.snapshot().members).get(job.job_id, job.default)
        if target == current:
            self._decide(state, "steady", desired=desired, target=target, count=current)
            return
        wait = state.since + job.rule.cooldown - now
        if target < current and wait > 0:
            self._decide(state, "cooldown", desired=desired, target=target, count=current)
            logger.debug("autoscale: job %s stays at %d for %.1fs (cooldown)", job.job_id, wait)
            return
        # desired_workers() may have run long: write only while this process still holds the
        # lock, so two processes never take turns writing.
        if not self._renew(job, state):
            return
        try:
            # A pause that landed since the check above wins: the write leaves a paused job
            # as it is, in the same atomic step.
            count = self.backend.set_count_unless_paused(
                job.job_id, to=target, by=None, default=job.default, maximum=job.maximum
            )
        except ValueError as exc:
            self._decide(state, "error", desired=desired, target=target, error=str(exc))
            self._report(job, state, f"the count could not be set: {exc}")
            return
        if count is None:
            self._paused(job, state, desired)
            return
        rebalance(self.backend)
        state.since = now
        state.last_change = {"at": self.kernel.time(), "from": current, "to": count}
        self._decide(state, "scaled", desired=desired, target=target, count=count)
        clamped = "" if desired == target else f", clamped to [{job.rule.min}, {job.rule.max}]"
        logger.info(
            "autoscale: job %s %d -> %d (desired_workers() returned %d%s) by process %s",
            job.job_id,
            current,
            count,
            desired,
            clamped,
            self.identity,
        )

    def _paused(self, job: AutoscaledJob, state: _JobState, desired: int) -> None:
        self._decide(state, "paused", desired=desired)
        if not state.paused:
            logger.info(
                "autoscale: job %s is paused; not scaling it until it is resumed", job.job_id
            )
        state.paused = True

    def _renew(self, job: AutoscaledJob, state: _JobState) -> bool:
        """Extend the lock; False (and the lock forgotten) when it is no longer ours."""
        assert state.held is not None
        name = lock_name(job.job_id)
        if self.backend.lock_renew(name, state.held.token, job.lock_ttl, grace=job.grace):
            return True
        logger.warning(
            "autoscale: job %s: process %s lost the autoscale lock (its membership lapsed, or "
            "the lock expired while desired_workers() ran); another process evaluates it now",
            job.job_id,
            self.identity,
        )
        state.held = None
        return False

    def _desired(self, job: AutoscaledJob, state: _JobState) -> int | None:
        if state.instance is None:
            state.instance = job.job_class(
                job_id=job.job_id, worker_index=-1, options=job.options, stop_event=self._stop
            )
        method: Callable[[], Any] = state.instance.desired_workers  # type: ignore[attr-defined]
        value = method()
        if inspect.iscoroutine(value):
            value = asyncio.run(value)
        if isinstance(value, bool):
            value = None
        try:
            desired = operator.index(value)
        except TypeError:
            message = f"desired_workers() returned {value!r}, not an integer; skipped"
            self._decide(state, "error", error=message)
            self._report(job, state, message)
            return None
        if state.reported is not None:
            logger.info("autoscale: job %s evaluates normally again", job.job_id)
            state.reported = None
        return desired

    # -- bookkeeping ---------------------------------------------------------------------------

    def _decide(self, state: _JobState, action: str, **fields: Any) -> None:
        state.last = {"at": self.kernel.time(), "action": action, **fields}

    def _report(self, job: AutoscaledJob, state: _JobState, message: str) -> None:
        """Log a problem once while it repeats (a new one is logged again)."""
        if message != state.reported:
            state.reported = message
            logger.warning("autoscale: job %s: %s", job.job_id, message)

    def _publish(self, job: AutoscaledJob, state: _JobState) -> None:
        state.published = {
            "min": job.rule.min,
            "max": job.rule.max,
            "interval": job.rule.interval,
            "cooldown": job.rule.cooldown,
            "evaluating": state.held is not None,
            "last": state.last,
            "last_change": state.last_change,
        }

    def _release_all(self) -> None:
        for job in self.jobs:
            state = self._states[job.job_id]
            if state.held is None:
                continue
            token, state.held = state.held.token, None
            state.due = 0.0
            try:
                self.backend.lock_release(lock_name(job.job_id), token)
            except BackendError as exc:
                logger.warning(
                    "autoscale: could not release the autoscale lock of job %s (%s); a peer "
                    "takes it over once this process has left the group",
                    job.job_id,
                    exc,
                )
            else:
                logger.info(
                    "autoscale: process %s no longer evaluates job %s", self.identity, job.job_id
                )
            self._publish(job, state)
