"""One simulated group: the server, the processes (real Managers), the jobs and the faults."""

from __future__ import annotations

import copy
import itertools
import json
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, ClassVar

from ...backends.base import HeartbeatResult
from ...backends.memory import MemoryBackend
from ...config.defaults import RESTART_BACKOFF_MAX
from ...config.schema import JobConfig, Settings, settings_from
from ...job import Base
from ...runtime.manager import Manager
from . import scenario as sc
from .invariants import Checker, RecordRun
from .network import Link, SimBackend, SimStore
from .scheduler import EPOCH, Owner, Scheduler, SimKernel

NAMESPACE = "sim"


class Stop(Exception):
    """Ends a run at its first violation."""


class SimProcess:
    """One ``process-balancer run``: a real Manager on a simulated kernel and network."""

    def __init__(self, world: World, name: str, capacity: int, run: int = 1) -> None:
        self.world = world
        self.name = name
        #: This run of the name: ``p1``, then ``p1.2``, ... for restarts of a stable identity.
        self.run = run
        self.label = name if run == 1 else f"{name}.{run}"
        self.capacity = capacity
        self.owner = Owner(self.label)
        label = self.label
        self.kernel = SimKernel(world.sched, self.owner, world.stream(f"kernel:{label}"))
        self.link = Link(world.stream(f"link:{label}"))
        self.link.noise = world.scenario.noise
        self.backend = SimBackend(world, label, world.server, self.link)
        stable = name if world.scenario.stable else None
        settings = replace(world.settings, max_threads=capacity, stable_identity=stable)
        self.manager = Manager(
            settings,
            world.job_classes,
            self.backend,
            identity=name,
            handle_signals=False,
            kernel=self.kernel,
        )
        self.state = "running"  # quiet, stopping, stopped, crashed
        self.freezes = 0
        #: Frozen or partitioned now: an orchestrator may start a new run of its name.
        self.cut_off = False
        self.exit_code: int | None = None
        self.stop_asked: float | None = None
        self.exited_at: float | None = None
        self.last_heartbeat = float("-inf")

    def start(self) -> None:
        self.kernel.thread(self._main, "pb-main").start()

    def _main(self) -> None:
        self.exit_code = self.manager.run()
        self.exited_at = self.world.sched.now
        self.state = "stopped"
        self.world.note(self.label, f"exited with code {self.exit_code}")

    @property
    def alive(self) -> bool:
        return self.state in ("running", "quiet", "stopping")


class SimJob(Base):
    """Claims 1-4 records per iteration (8-30 in one of four), each taking simulated time, and
    reports every record to the checker with its fencing token."""

    world: ClassVar[World]

    def lock_records(self) -> range:
        world = self.world
        process = world.current_process()
        slot = (self.job_id, self.worker_index)
        token = self.fencing_token or 0
        self._freezes = process.freezes
        if self.job_id in world.partitioned and (self.generation is None or not self.worker_count):
            world.checker.fail(
                "barrier",
                world.elapsed(),
                f"{self.job_id}:{self.worker_index} began an iteration without a count "
                f"({self.worker_count}) or generation ({self.generation})",
            )
        if not world.checker.claim(slot, token):
            world.note(process.label, f"{slot[0]}:{slot[1]} token {token} refused by the resource")
        if world.raising(self.job_id) and world.job_rng.random() < 0.5:
            raise RuntimeError("simulated failure in lock_records")
        # Mostly short iterations; one in four is a long batch (up to about 12 s), whose
        # holder must be cut off by its lease in the middle, not at the next lock attempt.
        rng = world.job_rng
        return range(rng.randint(1, 4) if rng.random() < 0.75 else rng.randint(8, 30))

    def process_record(self, record: int) -> None:
        world = self.world
        process = world.current_process()
        slot = (self.job_id, self.worker_index)
        run = world.checker.record_start(
            slot, process.label, self.fencing_token or 0, world.elapsed(), self._freezes
        )
        if self.job_id in world.partitioned:
            run.generation = self.generation
        world.sched.sleep(world.job_rng.uniform(0.01, 0.4))
        if world.raising(self.job_id) and world.job_rng.random() < 0.2:
            raise RuntimeError("simulated failure in process_record")
        world.record_end(run, process)

    def unlock_records(self) -> None:
        pause = self.world.job_rng.choice((0.0, 0.0, 0.0, 0.1, 0.3))
        if pause:
            self.status_sleep(pause)


class TraceHandler(logging.Handler):
    """Puts the runtime's log lines into the trace, stamped with simulated time."""

    def __init__(self, world: World, level: int) -> None:
        super().__init__(level)
        self.world = world

    def emit(self, record: logging.LogRecord) -> None:
        task = self.world.sched.current
        who = task.owner.name if task is not None else "sim"
        self.world.note(who, f"{record.levelname.lower()}: {record.getMessage()}")


class World:
    """Everything one seed runs; :meth:`run` returns the checker's violations."""

    def __init__(self, scenario: sc.Scenario, *, verbose: bool = False) -> None:
        self.scenario = scenario
        self.verbose = verbose
        seed = scenario.seed
        self.sched = Scheduler(self.stream("scheduler"))
        self.job_rng = self.stream("jobs")
        # Drawn from a stream of their own, so the rest of every seed is as before.
        picks = self.stream("partitioned")
        self.partitioned = {job for job, _ in scenario.jobs if picks.random() < 0.5}
        self.checker = Checker()
        self.trace: list[tuple[float, str, str]] = []
        self.server_skew = 0.0
        serial = itertools.count(1)
        self.store = SimStore(
            f"sim-{seed}", self._server_clock, lambda n: f"{next(serial):0{2 * n}x}"
        )
        self.server = MemoryBackend("memory://sim", NAMESPACE, store=self.store)
        self.sim_owner = Owner("sim")
        self.job_classes: dict[str, type[Base]] = {
            job: type(f"SimJob_{job}", (SimJob,), {"world": self}) for job, _ in scenario.jobs
        }
        base = settings_from(
            backend="memory://sim",
            namespace=NAMESPACE,
            heartbeat_interval=sc.HEARTBEAT,
            process_expiry=sc.EXPIRY,
            shutdown_timeout=sc.SHUTDOWN,
            environ={},
        )
        jobs = {
            job: JobConfig(
                job_id=job,
                class_path=f"simulation:{job}",
                workers=count,
                runtime_lock_timeout=scenario.lock_ttl,
                lock_acquire_timeout=5.0,
                options={},
                takeover_grace=scenario.grace,
                partitioned=job in self.partitioned,
            )
            for job, count in scenario.jobs
        }
        self.settings: Settings = replace(base, jobs=jobs)
        #: Every run of every process, by its label, in the order they started.
        self.runs: dict[str, SimProcess] = {}
        self._raising: dict[str, float] = {}
        self._snapshots: dict[int, Any] = {}
        self._last_assignment: tuple[int, Any] | None = None
        self.start = self.sched.now

    # -- helpers -----------------------------------------------------------------------------

    @property
    def processes(self) -> dict[str, SimProcess]:
        """The latest run of every process name (a restart under a stable identity is a new
        run of the same name)."""
        return {process.name: process for process in self.runs.values()}

    def stream(self, name: str) -> random.Random:
        """An independent random stream of this seed (adding a draw to one leaves the others
        unchanged)."""
        return random.Random(f"{self.scenario.seed}:{name}")

    def _server_clock(self) -> float:
        return EPOCH + self.sched.now + self.server_skew

    def elapsed(self) -> float:
        return self.sched.now - self.start

    def note(self, who: str, text: str) -> None:
        self.trace.append((self.elapsed(), who, text))

    def current_process(self) -> SimProcess:
        task = self.sched.current
        assert task is not None
        return self.runs[task.owner.name]

    def raising(self, job: str) -> bool:
        return self.sched.now < self._raising.get(job, float("-inf"))

    # -- hooks of the network ----------------------------------------------------------------

    def apply_late(self, process: str, op: str, delay: float, apply: Callable[[], object]) -> None:
        def deliver() -> None:
            self.sched.sleep(delay)
            self.note(process, f"{op} sent {delay:.2f}s ago reaches the server now")
            apply()

        self.sched.spawn(self.sim_owner, f"late-{op}", deliver)

    def heartbeat_applied(self, label: str, result: HeartbeatResult) -> None:
        process = self.runs.get(label)
        if process is not None:
            process.last_heartbeat = self.sched.now
        if result.joined or result.new_incarnation:
            extra = f"; new incarnation: {result.new_incarnation}" if result.new_incarnation else ""
            self.note(label, f"heartbeat: joined={result.joined} v{result.version}{extra}")

    def lock_granted(self, name: str, holder: str, fence: int) -> None:
        job, _, index = name.rpartition(":")
        self.note(holder, f"lock {name} granted, token {fence}")
        self.checker.granted((job, int(index)), holder, fence, self.elapsed())
        # No other process may still count on a lease of that slot: its own clock must say
        # it has run out (frozen or not, its deadline is its own to keep).
        now = self.sched.now
        for process in self.runs.values():
            if process.manager.holder == holder or process.state == "crashed":
                continue
            membership = process.manager.membership.valid_until
            for lease in process.manager.keeper._held():
                if lease.lost or lease.driver.context.name != name:
                    continue
                left = min(lease.lock_until, membership) - lease.margin - now
                if left > 0:
                    self.checker.fail(
                        "exclusion",
                        self.elapsed(),
                        f"lock {name} granted to {holder} while {process.label}'s lease on it "
                        f"runs {left:.3f}s more by its own clock",
                    )

    def record_end(self, run: RecordRun, process: SimProcess) -> None:
        self.checker.record_end(run, self.elapsed(), process.freezes)

    def assignment_context(self) -> tuple[int, Any]:
        group = self.store.group(NAMESPACE)
        return group.assignment_version, self._context(group)

    @staticmethod
    def _binding(
        assignment: dict[str, dict[str, list[int]]], unplaced: Any, traits: dict[str, Any]
    ) -> bool:
        """Whether slots are unplaced or some process runs as many as its max_threads."""
        if any(unplaced.values()):
            return True
        for member, jobs in assignment.items():
            raw = traits.get(member)
            capacity = json.loads(raw).get("capacity", 0) if isinstance(raw, str) else 0
            if sum(map(len, jobs.values())) >= capacity:
                return True
        return False

    @staticmethod
    def _context(group: Any) -> Any:
        return (dict(group.counts), dict(group.paused), dict(group.traits))

    def assignment_written(self, before: tuple[int, Any], slots: Any, unplaced: Any) -> None:
        """Check a join's moves against the previous assignment this run saw written."""
        group = self.store.group(NAMESPACE)
        after = {m: {j: list(i) for j, i in jobs.items()} for m, jobs in slots.items()}
        shown = "; ".join(
            f"{m}: " + ",".join(f"{j}{list(i)}" for j, i in jobs.items() if i)
            for m, jobs in sorted(after.items())
        )
        self.note("sim", f"assignment v{group.assignment_version}: {shown}")
        context = self._context(group)
        # Where capacity binds, a join may shift slots of other jobs to balance them (jobs
        # share each process's max_threads): the bound is checked where it does not.
        binding = self._binding(after, unplaced, context[2])
        last = self._last_assignment
        if last is not None and last[0] == before[0]:
            counts, paused, traits = before[1]
            previous, old_context, old_binding = last[1]
            same = (counts, paused) == old_context[:2] and not (binding or old_binding)
            same = same and all(
                traits.get(m) == t for m, t in old_context[2].items() if m in traits
            )
            self.checker.assignment_written(previous, after, same, self.elapsed())
        self._last_assignment = (group.assignment_version, (after, context, binding))

    # -- faults ------------------------------------------------------------------------------

    def spawn_process(self, name: str, capacity: int) -> None:
        before = self.processes.get(name)
        process = SimProcess(self, name, capacity, 1 if before is None else before.run + 1)
        self.runs[process.label] = process
        self.note(process.label, f"starts (max_threads {capacity})")
        process.start()

    def apply(self, fault: sc.Fault) -> None:
        kind = fault.kind
        process = self.processes.get(fault.target)
        self.note("fault", fault.describe())
        if kind in ("crash", "pause", "partition", "slow", "quiet", "stop", "skew") and (
            process is None or not process.alive
        ):
            self.note("fault", f"(no effect: {fault.target} is not running)")
            return
        if kind == "restart":
            if process is None:
                self.note("fault", f"(no effect: {fault.target} never ran)")
            elif process.alive and not process.cut_off:
                self.note("fault", f"(no effect: {process.label} still runs)")
            else:
                self.spawn_process(fault.target, int(fault.value))
            return
        if kind == "crash":
            assert process is not None
            process.state = "crashed"
            self.sched.kill(process.owner)
        elif kind == "pause":
            assert process is not None
            process.freezes += 1
            process.cut_off = True
            self.sched.freeze(process.owner)
            self.sched.call_at(self.sched.now + fault.value, lambda: self._thaw(process))
        elif kind == "partition":
            assert process is not None
            process.link.cut = fault.mode
            process.cut_off = True
            self.sched.call_at(self.sched.now + fault.value, lambda: self._heal(process))
        elif kind == "slow":
            assert process is not None
            process.link.slow = True
            self.sched.call_at(self.sched.now + fault.value, lambda: self._unslow(process))
        elif kind == "wipe":
            self.store.wipe()
        elif kind == "restore":
            saved = copy.deepcopy(self.store.groups)

            def restore() -> None:
                self.note("fault", "backend restarts with the older state")
                self.store.restart(saved)

            self.sched.call_at(self.sched.now + fault.value, restore)
        elif kind == "clock":
            self.server_skew += fault.value
        elif kind == "skew":
            assert process is not None
            process.kernel.wall_skew = fault.value
        elif kind == "count":
            self.server.set_count(fault.target, to=int(fault.value), by=None, default=0)
        elif kind == "raise":
            self._raising[fault.target] = self.sched.now + fault.value
        elif kind == "join":
            self.spawn_process(fault.target, int(fault.value))
        elif kind in ("quiet", "stop"):
            assert process is not None
            if kind == "quiet":
                process.state = "quiet" if process.state == "running" else process.state
                process.manager.request_quiet()
            else:
                process.state = "stopping"
                process.stop_asked = self.sched.now
                process.manager.request_stop()

    def _thaw(self, process: SimProcess) -> None:
        process.cut_off = False
        if process.alive:
            self.note(process.label, "resumes")
            self.sched.thaw(process.owner)

    def _unslow(self, process: SimProcess) -> None:
        self.note(process.label, "its link is fast again")
        process.link.slow = False

    def _heal(self, process: SimProcess) -> None:
        self.note(process.label, "partition heals")
        process.link.cut = None
        process.cut_off = False

    def calls_quiet(self) -> None:
        for process in self.runs.values():
            process.link.noise = 0.0

    def all_tasks_errors(self) -> Iterator[tuple[str, str, BaseException]]:
        for process in self.runs.values():
            for task in process.owner.tasks:
                if task.error is not None:
                    yield process.label, task.name, task.error

    def pending_backoff(self) -> float:
        """Seconds until the last pending worker restart of any process."""
        due = [
            at - self.sched.now
            for process in self.runs.values()
            if process.alive
            for at in process.manager.supervisor._restart_at.values()
        ]
        return min(RESTART_BACKOFF_MAX * 1.1, max([0.0, *due]))
