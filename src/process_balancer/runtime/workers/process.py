"""The process worker kind (``worker: process``): each slot's job runs in a child process of
its own, so CPU-bound jobs are not serialised by the interpreter lock.

The parent runs the protocol of every kind on a thread (the worker lock, its lease and
renewals, the fencing token, the bookkeeping) and has the child (``child.py``) run the job:
the hooks, then, while the lock is held, the iteration contexts, ``lock_records``, the
records and ``unlock_records``. While the child works, the parent watches three clocks:

- a stop (the slot moves, the process stops) or a lost lease asks the child to stop at its
  next record boundary;
- a child that has not stopped by the time the lease could expire is killed (SIGKILL):
  ``margin`` after the lease was lost (never later than its deadline), or one lock TTL
  (``runtime_lock_timeout``) after a stop, the time a peer would wait had this process died;
- an iteration that runs longer than the job's ``max_iteration_time`` is killed.

Exclusion therefore no longer depends on the job's records being short. A killed child runs
no ``unlock_records``: what it had claimed stays claimed until the job's own claims expire
or a newer fencing token supersedes them. A kill or a child that dies by itself (a crash,
the OOM killer, ``os._exit``) is a job failure: the worker restarts with a backoff and the
slot's ``last_error`` says what happened.

Children are started with ``spawn``: a fresh interpreter that inherits nothing of a parent
running threads (lease keeper, backend connections) whose locks a ``fork`` could copy held.
``forkserver`` would start children faster, but a slot's child is started once per worker,
not per iteration, and spawn behaves the same on every platform.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from ...config import defaults
from ...job import Base
from ..kernel import SYSTEM, Kernel
from ..leases import LeaseKeeper
from ..wakeups import Notifier
from . import child
from .base import Worker, WorkerSpec
from .shared import SharedResources

__all__ = ["ChildError", "ProcessWorker"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How often the parent looks at its clocks and its child while the child works.
TICK = 0.02
#: Seconds a child that was told to exit has before it is killed.
EXIT_GRACE = 2.0


class ChildError(Exception):
    """The job raised in the child, or the child died or was killed."""

    def __init__(self, text: str, detail: str = "") -> None:
        super().__init__(text)
        self.text = text
        self.detail = detail


class _RemoteJob(Base):
    """The parent's stand-in for the job in the child: only what the protocol reads."""

    def __repr__(self) -> str:
        return f"<{self.job_id}:{self.worker_index} in a child process>"


def describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    if code == child.LEASE_EXPIRED:
        return "ended itself: its lease expired without a renewal from its parent"
    return f"exited with status {code}"


class ProcessWorker(Worker):
    """Runs the slot's protocol on a thread and the job in a child process."""

    kind = "process"

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
        super().__init__(
            spec, keeper=keeper, notifier=notifier, on_exit=on_exit, kernel=kernel, shared=shared
        )
        self._thread = kernel.thread(self.run_slot, f"pb-{spec.job_id}-{spec.worker_index}")
        self._child: Any = None  # multiprocessing's Process of the child
        self._commands: Connection | None = None
        self._results: Connection | None = None
        self._seq = 0
        outer = self._on_exit

        def finish(worker: Worker) -> None:
            self._close_child()
            outer(worker)

        self._on_exit = finish

    # -- the kind ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def child_pid(self) -> int | None:
        pid = getattr(self._child, "pid", None)
        return None if pid is None else int(pid)

    def make_job(self) -> Base:
        spec = self.spec
        context = multiprocessing.get_context("spawn")
        commands_in, commands_out = context.Pipe(duplex=False)
        results_in, results_out = context.Pipe(duplex=False)
        self._child = context.Process(
            target=child.main,
            args=(
                commands_in,
                results_out,
                os.getpid(),
                spec.job_class,
                spec.job_id,
                spec.worker_index,
                spec.options,
                logging.getLogger().getEffectiveLevel(),
            ),
            name=f"pb-{spec.job_id}-{spec.worker_index}",
            daemon=True,
        )
        self._child.start()
        commands_in.close()
        results_out.close()
        self._commands, self._results = commands_out, results_in
        logger.info(
            "job %s worker %d runs in child process %d", spec.job_id, spec.worker_index,
            self._child.pid,
        )  # fmt: skip
        self._answer(self._wait())
        return _RemoteJob(
            job_id=spec.job_id,
            worker_index=spec.worker_index,
            options=spec.options,
            control=self.control,
        )

    def call(self, method: Callable[..., T], *args: Any) -> T:
        """A hook (``before_perform``, ``after_perform``) runs in the child. After the child
        died, ``after_perform`` cannot run: the failure already on its way is what counts."""
        if self._child is None or not self._child.is_alive():
            return None  # type: ignore[return-value]
        self._send(("call", method.__name__))
        self._answer(self._wait())
        return None  # type: ignore[return-value]

    # -- the iteration, in the child ---------------------------------------------------------

    def _records(self, job: Base) -> None:
        """The part of the iteration that holds the lock runs in the child, watched."""
        lease = self._lease
        assert lease is not None
        self._seq += 1
        granted = self.granted
        count, generation = (None, None) if granted is None else (granted.count, granted.generation)
        self._send(("iterate", self._seq, lease.fence, lease.deadline, count, generation))
        sent_deadline = lease.deadline
        monotonic = self._monotonic
        began = monotonic()
        limit = self.spec.max_iteration_time
        stop_sent = False
        lost_at: float | None = None
        halted_at: float | None = None
        ttl = lease.driver.ttl or defaults.RUNTIME_LOCK_TIMEOUT
        results = self._results
        assert results is not None
        while True:
            now = monotonic()
            kill_at, why = math.inf, ""
            if limit is not None:
                kill_at, why = began + limit, f"it ran longer than max_iteration_time ({limit:g}s)"
            if self._cut and not stop_sent:
                self._send(("stop",))
                stop_sent = True
            if lease.lost:
                lost_at = now if lost_at is None else lost_at
                at = min(lost_at + lease.margin, lease.deadline)
                if at < kill_at:
                    kill_at, why = at, f"its worker lock was lost ({lease.lost_reason})"
            elif lease.deadline != sent_deadline:
                sent_deadline = lease.deadline
                self._send(("deadline", self._seq, sent_deadline))
            if self._halt:
                halted_at = now if halted_at is None else halted_at
                if halted_at + ttl < kill_at:
                    kill_at = halted_at + ttl
                    why = f"it was asked to stop ({self.stop_reason}) and did not within {ttl:g}s"
            if now >= kill_at:
                self._kill(why)
            if results.poll(max(0.0, min(TICK, kill_at - now))):
                self._answer(self._receive())
                return
            if not self._child.is_alive() and not results.poll():
                self._died()

    # -- talking to the child ----------------------------------------------------------------

    def _send(self, message: tuple[Any, ...]) -> None:
        assert self._commands is not None
        try:
            self._commands.send(message)
        except OSError:
            self._died()

    def _receive(self) -> tuple[Any, ...]:
        assert self._results is not None
        try:
            reply: tuple[Any, ...] = self._results.recv()
        except (EOFError, OSError):
            self._died()
        return reply

    def _wait(self) -> tuple[Any, ...]:
        """The child's answer to a request that holds no lock (no deadline to keep)."""
        results = self._results
        assert results is not None
        while not results.poll(TICK * 5):
            if not self._child.is_alive() and not results.poll():
                self._died()
        return self._receive()

    def _answer(self, reply: tuple[Any, ...]) -> None:
        status, first, second, count = reply
        self.records += count
        if status == "error":
            raise ChildError(first, second)
        if first is not None:
            self.control.sleep_for = first
        if second:
            self.control.abort = True

    def _died(self) -> Any:
        self._child.join(EXIT_GRACE)
        raise ChildError(f"WorkerProcessDied: the child process {describe_exit(self._exitcode())}")

    def _kill(self, why: str) -> None:
        self._child.kill()
        self._child.join()
        logger.warning(
            "job %s worker %d: killed child process %d: %s; unlock_records did not run in it",
            self.spec.job_id,
            self.spec.worker_index,
            self._child.pid,
            why,
        )
        raise ChildError(f"WorkerProcessKilled: {why}")

    def _exitcode(self) -> int | None:
        code = self._child.exitcode
        return None if code is None else int(code)

    def _failed(self, exc: BaseException) -> None:
        if not isinstance(exc, ChildError):
            super()._failed(exc)
            return
        self.outcome = "failed"
        self.error = exc.text
        logger.error(
            "job %s worker %d failed in its child process (%s); the worker restarts after a "
            "backoff%s",
            self.spec.job_id,
            self.spec.worker_index,
            exc.text,
            f"\n{exc.detail.rstrip()}" if exc.detail else "",
        )

    def _close_child(self) -> None:
        process = self._child
        if process is None:
            return
        if process.is_alive():
            with contextlib.suppress(ChildError):
                self._send(("exit",))
            process.join(EXIT_GRACE)
            if process.is_alive():
                process.kill()
                process.join()
        for conn in (self._commands, self._results):
            if conn is not None:
                conn.close()
