"""The job contract: subclass :class:`Base` (or :class:`AsyncBase`, for coroutines) and
implement the three record methods."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
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


#: What an entry of ``iteration_context`` returns when called with the job: a context manager
#: entered around the iteration (an async one too, for an :class:`AsyncBase` job).
IterationContext = Callable[[Any], AbstractContextManager[Any] | AbstractAsyncContextManager[Any]]


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

    #: Context-manager factories entered around every iteration that holds the worker lock,
    #: in this order (exited in reverse, also after an exception or a lost lock): each is
    #: called with the job, whose ``job_id``, ``worker_index`` and ``fencing_token`` are set,
    #: and its context is entered before ``lock_records`` and exited after
    #: ``unlock_records``. The job's ``iteration_context`` option adds more after these.
    iteration_context: ClassVar[Sequence[IterationContext]] = ()

    #: A change of the job's worker count is a barrier (the job's ``partitioned`` option
    #: overrides it): every slot of the old count stops (``unlock_records`` has run, its
    #: lock is released) before any slot of the new count starts, so a job that splits its
    #: work as ``key % worker_count == worker_index`` never has two slots on one key.
    partitioned: ClassVar[bool] = False

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
        #: The count of the job's slots and its generation, a number that increases
        #: whenever that count changes; set before every iteration that holds the lock.
        #: For a partitioned job no slot runs under another generation than the current one.
        self.worker_count: int | None = None
        self.generation: int | None = None
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


class AsyncBase(Base):
    """A long-running, iterative job written with coroutines (the ``asyncio`` worker kind).

    The contract of :class:`Base` with ``async def`` methods: every asyncio slot of a process
    runs on one event loop, on a thread of its own. ``lock_records`` may return an iterable
    or an async iterable (an ``async def`` generator works too). A stop or a lost worker
    lock cancels the running record at its next ``await``; ``unlock_records`` and
    ``after_perform`` still run. A call that blocks (``time.sleep``, a synchronous client)
    stalls every async slot of the process: the runner measures that lag, reports it and
    names the slot, so await such calls or run them with ``asyncio.to_thread``.
    """

    # The signatures differ from Base's on purpose (coroutines): the runner calls them only
    # through the asyncio worker kind, which awaits them.
    async def lock_records(self) -> Iterable[Any] | AsyncIterable[Any] | None:  # type: ignore[override]
        """Atomically claim a batch of work and return it (an iterable or an async
        iterable, or None for nothing)."""
        raise NotImplementedError(f"{type(self).__name__} must implement lock_records()")

    async def process_record(self, record: Any) -> None:  # type: ignore[override]
        """Handle one claimed record and release it when done."""
        raise NotImplementedError(f"{type(self).__name__} must implement process_record()")

    async def unlock_records(self) -> None:  # type: ignore[override]
        """Release whatever this worker still holds. Runs after every iteration."""
        raise NotImplementedError(f"{type(self).__name__} must implement unlock_records()")

    async def before_perform(self) -> None:  # type: ignore[override]
        """Hook run at the start of every iteration, before the worker lock is taken."""

    async def after_perform(self) -> None:  # type: ignore[override]
        """Hook run at the end of every iteration, after the worker lock is released."""
