"""One simulated clock and a seeded scheduler: the runtime's threads as greenlets.

Every thread the runtime starts through its kernel becomes a :class:`Task`, a greenlet that
runs until it waits (an event, a lock, a sleep, a backend call's latency) and then hands
control back to the scheduler. Only one task runs at a time, code between two waits takes no
simulated time, and when several tasks are ready at the same instant the seeded random
generator picks which runs first. Time moves only when no task is ready: the clock jumps to the
next timer. A run is therefore a pure function of its seed.

A :class:`SimKernel` is what one simulated process sees (:class:`~process_balancer.runtime.
kernel.Kernel`'s interface): the shared clock, its own wall-clock skew and its own random
stream, and events, locks and threads whose tasks belong to it, so that the whole process can
be frozen (SIGSTOP) or killed (SIGKILL) at once.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from types import TracebackType
from typing import Any

from greenlet import GreenletExit, greenlet

from ...runtime.kernel import Kernel

#: The epoch second the simulated wall clock starts at (2023-11-14), so times look plausible.
EPOCH = 1_700_000_000.0


class Killed(GreenletExit):  # type: ignore[misc]
    """Thrown into the tasks of a process that no longer runs (crashed, or the run ended)."""


class Task:
    """One simulated thread."""

    __slots__ = ("done", "error", "finished", "glet", "name", "owner", "ready", "waits", "woken")

    def __init__(self, owner: Owner, name: str, target: Callable[[], object], hub: greenlet):
        self.owner = owner
        self.name = name
        self.glet = greenlet(self._main(target), parent=hub)
        self.waits = 0  # bumped by every wait and wake-up: a stale timer finds it changed
        self.woken = False
        self.ready = False  # in the run queue (or parked): never queued twice
        self.finished = False
        self.error: BaseException | None = None
        self.done: list[Callable[[], None]] = []

    def _main(self, target: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except GreenletExit:
                pass
            except BaseException as exc:  # reported as a failure of the run
                self.error = exc
            finally:
                self.finished = True
                for callback in self.done:
                    callback()

        return run

    def __repr__(self) -> str:
        return f"<Task {self.owner.name}/{self.name}>"


class Owner:
    """What tasks belong to: a simulated process, or the simulation itself."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.frozen = False
        self.killed = False
        #: Tasks that became ready while the owner was frozen; released when it resumes.
        self.parked: list[Task] = []
        self.tasks: list[Task] = []


class Scheduler:
    """The simulated clock and the run queue; :meth:`run_until` drives everything."""

    def __init__(self, rng: random.Random, start: float = 1000.0) -> None:
        self.rng = rng
        self.now = start
        self.hub = greenlet.getcurrent()
        self.current: Task | None = None
        self._ready: list[Task] = []
        self._timers: list[tuple[float, int, Any, int]] = []
        self._seq = itertools.count()
        self.steps = 0
        self.closed = False
        #: Called after every task switch (the invariants are checked there).
        self.after_step: Callable[[], None] | None = None

    # -- tasks -------------------------------------------------------------------------------

    def spawn(self, owner: Owner, name: str, target: Callable[[], object]) -> Task:
        task = Task(owner, name, target, self.hub)
        owner.tasks.append(task)
        self._make_ready(task)
        return task

    def call_at(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` on the scheduler at simulated time ``when`` (faults, checks)."""
        heapq.heappush(self._timers, (when, next(self._seq), action, -1))

    def _make_ready(self, task: Task) -> None:
        if task.ready:
            return
        task.ready = True
        if task.owner.frozen:
            task.owner.parked.append(task)
        else:
            self._ready.append(task)

    def wake(self, task: Task) -> None:
        """Make a waiting task ready (an event was set, a lock handed over)."""
        if task.finished:
            return
        task.waits += 1  # its timer, if any, is stale now
        task.woken = True
        self._make_ready(task)

    def wait(self, timeout: float | None) -> bool:
        """Park the current task until :meth:`wake` or ``timeout`` seconds; True if woken."""
        task = self.current
        if task is None:
            raise RuntimeError("a simulated wait outside a simulated task")
        if task.owner.killed or self.closed:
            raise Killed()
        task.waits += 1
        task.woken = False
        if timeout is not None:
            heapq.heappush(
                self._timers, (self.now + max(0.0, timeout), next(self._seq), task, task.waits)
            )
        self.hub.switch()
        if task.owner.killed or self.closed:
            raise Killed()
        return task.woken

    def sleep(self, seconds: float) -> None:
        self.wait(seconds)

    def freeze(self, owner: Owner) -> None:
        owner.frozen = True
        parked = [t for t in self._ready if t.owner is owner]
        self._ready = [t for t in self._ready if t.owner is not owner]
        owner.parked.extend(parked)

    def thaw(self, owner: Owner) -> None:
        owner.frozen = False
        self._ready.extend(owner.parked)
        owner.parked.clear()

    def kill(self, owner: Owner) -> None:
        """The owner's tasks never run again (their ``finally`` blocks run only when the
        simulation is closed, and achieve nothing then)."""
        owner.killed = True
        owner.frozen = False
        owner.parked.clear()
        self._ready = [t for t in self._ready if t.owner is not owner]

    # -- the loop ----------------------------------------------------------------------------

    def run_until(self, end: float) -> None:
        """Run tasks and timers until simulated time ``end`` (or nothing is left to run)."""
        timers = self._timers
        while True:
            if self._ready:
                ready = self._ready
                index = self.rng.randrange(len(ready)) if len(ready) > 1 else 0
                task = ready[index]
                ready[index] = ready[-1]
                ready.pop()
                task.ready = False
                if task.finished or task.owner.killed:
                    continue
                self.current = task
                task.glet.switch()
                self.current = None
                self.steps += 1
                if self.after_step is not None:
                    self.after_step()
                continue
            if not timers or timers[0][0] > end:
                self.now = max(self.now, end)
                return
            when, _, target, waits = heapq.heappop(timers)
            self.now = max(self.now, when)
            if waits < 0:
                target()
                if self.after_step is not None:
                    self.after_step()
            elif target.waits == waits and not target.finished and not target.owner.killed:
                target.waits += 1
                self._make_ready(target)

    def close(self, owners: list[Owner]) -> None:
        """End every unfinished task, so that nothing of this run outlives it."""
        self.closed = True
        for owner in owners:
            owner.killed = True
            for task in owner.tasks:
                if not task.finished and task.glet:
                    self.current = task
                    try:
                        task.glet.throw(Killed())
                    except Killed:
                        pass
                    finally:
                        self.current = None
                elif not task.finished:
                    task.finished = True  # never started: nothing to unwind
        self._ready.clear()
        self._timers.clear()


class SimEvent:
    """``threading.Event`` on the simulated scheduler."""

    __slots__ = ("_flag", "_sched", "_waiters")

    def __init__(self, sched: Scheduler) -> None:
        self._sched = sched
        self._flag = False
        self._waiters: list[Task] = []

    def set(self) -> None:
        if self._flag:
            return
        self._flag = True
        waiters, self._waiters = self._waiters, []
        for task in waiters:
            self._sched.wake(task)

    def clear(self) -> None:
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        if self._flag:
            return True
        if timeout is not None and timeout <= 0:
            return False
        task = self._sched.current
        assert task is not None
        self._waiters.append(task)
        try:
            self._sched.wait(timeout)
        finally:
            if task in self._waiters:
                self._waiters.remove(task)
        return self._flag


class SimLock:
    """``threading.Lock`` on the simulated scheduler: a contended acquire waits as a task."""

    __slots__ = ("_owner", "_sched", "_waiters")

    def __init__(self, sched: Scheduler) -> None:
        self._sched = sched
        self._owner: Task | bool | None = None
        self._waiters: list[Task] = []

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        task = self._sched.current
        if self._owner is None:
            self._owner = task if task is not None else True
            return True
        if not blocking or task is None:
            return False
        self._waiters.append(task)
        try:
            while self._owner is not task:
                if not self._sched.wait(None if timeout < 0 else timeout):
                    return False
            return True
        finally:
            if task in self._waiters:
                self._waiters.remove(task)

    def release(self) -> None:
        if self._waiters:
            task = self._waiters.pop(0)
            self._owner = task
            self._sched.wake(task)
        else:
            self._owner = None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None:
        self.release()


class SimThread:
    """``threading.Thread`` on the simulated scheduler."""

    def __init__(
        self, sched: Scheduler, owner: Owner, target: Callable[[], object], name: str
    ) -> None:
        self._sched = sched
        self._owner = owner
        self._target = target
        self.name = name
        self.task: Task | None = None
        self._done = SimEvent(sched)

    def start(self) -> None:
        self.task = self._sched.spawn(self._owner, self.name, self._target)
        self.task.done.append(self._done.set)

    def is_alive(self) -> bool:
        return self.task is not None and not self.task.finished

    def join(self, timeout: float | None = None) -> None:
        if self.task is not None:
            self._done.wait(timeout)


class SimKernel(Kernel):
    """The kernel of one simulated process."""

    def __init__(self, sched: Scheduler, owner: Owner, rng: random.Random) -> None:
        self.sched = sched
        self.owner = owner
        #: Seconds this process's wall clock is off (display only: nothing may depend on it).
        self.wall_skew = 0.0
        self.monotonic = self._monotonic
        self.time = self._time
        self.uniform = rng.uniform
        self.token = lambda n: f"{rng.getrandbits(8 * n):0{2 * n}x}"

    def _monotonic(self) -> float:
        return self.sched.now

    def _time(self) -> float:
        return EPOCH + self.sched.now + self.wall_skew

    def event(self) -> SimEvent:
        return SimEvent(self.sched)

    def lock(self) -> SimLock:
        return SimLock(self.sched)

    def thread(self, target: Callable[[], object], name: str) -> SimThread:
        return SimThread(self.sched, self.owner, target, name)
