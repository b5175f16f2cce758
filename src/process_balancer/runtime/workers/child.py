"""The child process of a ``worker: process`` slot: it holds the job instance and runs what
its parent (``process.py``) asks, one message at a time.

Two one-way pipes join them. The parent sends ``("call", hook)`` for ``before_perform`` and
``after_perform``, ``("iterate", seq, fence, deadline)`` for the part of an iteration that
holds the worker lock (contexts, ``lock_records``, the records, ``unlock_records``),
``("stop",)`` to end the running iteration at its next record boundary, ``("deadline", seq,
t)`` when the lease was renewed, and ``("exit",)``. Every request is answered on the other
pipe with what the job asked for (``status_sleep``, ``status_abort``), a record count, or
the error it raised.

A reader thread receives the parent's messages, so a stop reaches the records while they
run. It also keeps the child from outliving its right to run: the parent gone (its pipe
closed) or the lease's deadline passed without a renewal (the parent paused, SIGSTOP) ends
the child at once, whatever its record is doing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

from ...job import Base, JobControl
from ..kernel import SYSTEM
from .contexts import enter_all, iteration_contexts

#: Exit status of a child that ended itself because its parent or its lease went away.
ORPHANED = 75
LEASE_EXPIRED = 76

#: Signals a terminal or an operator sends to a whole process group: the parent acts on
#: them (stop, quiet, stack dump) and tells its children; a child must not die of them.
_IGNORED = ("SIGINT", "SIGUSR1", "SIGTSTP", "SIGTTIN")


class _Reader:
    """The child's reader thread: stop flags and lease deadlines, everything else queued."""

    def __init__(self, commands: Connection, control: JobControl) -> None:
        self.commands = commands
        self.requests: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.stop = False
        self.stop_event = SYSTEM.event()
        control.stop_event = self.stop_event
        self.active: int | None = None  # the iteration the deadline belongs to
        self.deadline: float | None = None
        self.count = 0  # records done in the running iteration
        self.thread = SYSTEM.thread(self.run, "pb-child-reader")

    def run(self) -> None:
        while True:
            deadline = self.deadline if self.active is not None else None
            timeout = None if deadline is None else max(0.0, deadline - SYSTEM.monotonic())
            try:
                ready = self.commands.poll(timeout)
                message = self.commands.recv() if ready else None
            except (EOFError, OSError):
                os._exit(ORPHANED)
            if message is None:
                if self.active is not None and SYSTEM.monotonic() >= (self.deadline or 0.0):
                    os._exit(LEASE_EXPIRED)
                continue
            kind = message[0]
            if kind == "stop":
                self.stop = True
                self.stop_event.set()
            elif kind == "deadline":
                if message[1] == self.active:
                    self.deadline = message[2]
            else:
                if kind == "iterate":
                    # Set here, in message order, so a stop sent after it is never undone.
                    self.stop = False
                    self.active, self.deadline = message[1], message[3]
                self.requests.put(message)


def _orphan_on_parent_death(parent: int) -> None:
    """Linux: the kernel kills this child when its parent dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(ORPHANED)


def main(
    commands: Connection,
    results: Connection,
    parent: int,
    job_class: type[Base],
    job_id: str,
    worker_index: int,
    options: dict[str, Any],
    log_level: int,
) -> None:
    """The child's whole life: make the job, answer requests until told to exit."""
    _orphan_on_parent_death(parent)
    # A process group of its own: a signal meant for the runner's group (Ctrl-C in a
    # terminal, ``timeout``, ``kill -- -PGID``) reaches the parent, which stops the child
    # at a record boundary; the child does not die of it in the middle of a record.
    os.setpgrp()
    for name in _IGNORED:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s %(levelname)s [{job_id}:{worker_index} child] %(name)s: %(message)s",
    )
    control = JobControl()
    reader = _Reader(commands, control)
    reader.thread.start()
    try:
        job = job_class(job_id=job_id, worker_index=worker_index, options=options, control=control)
        contexts = iteration_contexts(job_class, options)
    except Exception as exc:
        results.send(_error(exc))
        return
    results.send(("ok", None, False, 0))
    while True:
        message = reader.requests.get()
        kind = message[0]
        if kind == "exit":
            return
        reader.count = 0
        try:
            if kind == "call":
                getattr(job, message[1])()
            else:
                job.fencing_token = message[2]
                job.worker_count, job.generation = message[4], message[5]
                _iterate(job, contexts, reader)
        except Exception as exc:
            reply = _error(exc, reader.count)
        else:
            reply = ("ok", control.sleep_for, control.abort, reader.count)
        finally:
            reader.active = None
        control.sleep_for = None
        results.send(reply)


def _error(exc: BaseException, count: int = 0) -> tuple[Any, ...]:
    text = f"{type(exc).__name__}: {exc}"
    return ("error", text, traceback.format_exc(), count)


def _iterate(job: Base, contexts: list[Any], reader: _Reader) -> None:
    if contexts:
        with enter_all(contexts, job):
            _records(job, reader)
    else:
        _records(job, reader)


def _records(job: Base, reader: _Reader) -> None:
    """``lock_records``, each record until a stop, ``unlock_records`` (always)."""
    primary: BaseException | None = None
    try:
        records = job.lock_records()
        if records is not None:
            process = job.process_record
            for record in records:
                if reader.stop:
                    break
                process(record)
                reader.count += 1
    except BaseException as exc:
        primary = exc
        raise
    finally:
        try:
            job.unlock_records()
        except Exception:
            if primary is None:
                raise
            logging.getLogger(__name__).exception(
                "job %s worker %d: unlock_records raised while handling another error",
                job.job_id,
                job.worker_index,
            )
