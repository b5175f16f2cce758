"""The job contract: subclass :class:`Base` and implement the three record methods."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Protocol

from .config import defaults


class StopEvent(Protocol):
    """What a job reads of its worker's stop event (a ``threading.Event`` in production)."""

    def is_set(self) -> bool: ...


class JobControl:
    """Between one job instance and the worker running it: the job asks for a sleep or an
    abort through it, and reads the lease the worker holds. The worker creates it and hands
    it to the job, so neither reads the other's private attributes."""

    def __init__(self, stop_event: StopEvent | None = None) -> None:
        self.stop_event: StopEvent = stop_event if stop_event is not None else threading.Event()
        #: Seconds to wait after the current iteration (``status_sleep``); None: none.
        self.sleep_for: float | None = None
        #: End the worker after the current iteration (``status_abort``).
        self.abort = False
        #: Seconds left on the held lease; set by the worker while an iteration holds it.
        self.lease_remaining: Callable[[], float] | None = None


class Base:
    """A long-running, iterative job.

    The runner creates one instance per worker slot and calls :meth:`perform`-style iterations
    on it in a loop: ``before_perform`` -> worker lock taken -> ``lock_records`` ->
    ``process_record`` for each record -> ``unlock_records`` -> lock released ->
    ``after_perform``. ``unlock_records`` and ``after_perform`` always run, also after an
    exception or a lost worker lock.

    Inside an instance, ``worker_index`` is exclusive across the whole group while the
    instance holds its worker lock, and ``fencing_token`` is an integer that strictly
    increases with every acquisition of that lock, so writes can reject a stale holder.
    """

    #: The worker lock: a built-in driver name (``"simple_redis"``) or a
    #: :class:`process_balancer.LockDriver` subclass.
    lock_driver: ClassVar[str | type[Any]] = defaults.LOCK_DRIVER

    def __init__(
        self,
        *,
        job_id: str,
        worker_index: int,
        options: Mapping[str, Any] | None = None,
        stop_event: StopEvent | None = None,
        control: JobControl | None = None,
    ) -> None:
        self.job_id = job_id
        self.worker_index = worker_index
        self.options: dict[str, Any] = dict(options or {})
        self.fencing_token: int | None = None
        self._control = control if control is not None else JobControl(stop_event)

    # -- the contract ------------------------------------------------------------------------

    def lock_records(self) -> Iterable[Any] | None:
        """Atomically claim a batch of work and return it (an iterable, or None for nothing)."""
        raise NotImplementedError(f"{type(self).__name__} must implement lock_records()")

    def process_record(self, record: Any) -> None:
        """Handle one claimed record and release it when done."""
        raise NotImplementedError(f"{type(self).__name__} must implement process_record()")

    def unlock_records(self) -> None:
        """Release whatever this worker still holds. Runs after every iteration."""
        raise NotImplementedError(f"{type(self).__name__} must implement unlock_records()")

    def before_perform(self) -> None:
        """Hook run at the start of every iteration, before the worker lock is taken."""

    def after_perform(self) -> None:
        """Hook run at the end of every iteration, after the worker lock is released."""

    # -- runtime helpers ---------------------------------------------------------------------

    @property
    def runtime_lock_timeout(self) -> float:
        """Seconds the worker lock lives without renewal (option ``runtime_lock_timeout``)."""
        value = self.options.get("runtime_lock_timeout", defaults.RUNTIME_LOCK_TIMEOUT)
        return float(value)

    @property
    def lease_remaining(self) -> float:
        """Seconds before the runner cuts this iteration off unless the worker lock and the
        process's membership are renewed in time (they are, in the background, while the
        backend answers); 0 outside an iteration or once cut off.

        A record that takes long can check it first: a peer may take the slot over
        ``takeover_grace`` seconds after this reaches 0, so a record that cannot end by then
        should not start (or should write with the fencing token).
        """
        remaining = self._control.lease_remaining
        return 0.0 if remaining is None else remaining()

    @property
    def stopping(self) -> bool:
        """True once this worker has been asked to stop (slot moved, process stopping)."""
        return self._control.stop_event.is_set()

    def status_sleep(self, seconds: float) -> None:
        """After this iteration, wait ``seconds`` before the next one (a stop cuts it short)."""
        seconds = float(seconds)
        if seconds < 0:
            raise ValueError(
                f"status_sleep() needs a non-negative number of seconds, got {seconds}"
            )
        self._control.sleep_for = seconds

    def status_abort(self) -> None:
        """End this worker instance after the current iteration; a fresh one starts later."""
        self._control.abort = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} job_id={self.job_id!r} worker_index={self.worker_index}>"
