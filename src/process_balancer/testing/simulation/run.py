"""Running one seed, checking what must hold once the faults are over, and shrinking."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from ...balancing.rebalance import effective_counts
from ...runtime.workers.base import ACQUIRE_RETRY_MAX
from . import scenario as sc
from .invariants import Violation
from .network import CALL_TIMEOUT
from .world import SimProcess, Stop, TraceHandler, World

#: Seconds the group gets, past the bound of :func:`settle_bound`, before it is checked.
FINAL_WINDOW = 3.0


@dataclass
class Result:
    scenario: sc.Scenario
    violations: list[Violation]
    trace: list[tuple[float, str, str]] = field(repr=False)
    steps: int = 0
    simulated: float = 0.0
    records: int = 0
    refused: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.violations)


def settle_bound(backoff: float, clock_set_back: float = 0.0, grace: float = 1.0) -> float:
    """Seconds after the last fault within which every slot must run again: a dead holder's
    membership expires (process_expiry), its lock is free takeover_grace later, a backend
    that lost the group holds locks for process_expiry more, and a heartbeat and a lock retry
    notice it; plus a worker's pending restart backoff, and however far the backend's clock
    was set back (deadlines on it come that much later)."""
    return (
        clock_set_back
        + sc.EXPIRY
        + grace
        + sc.EXPIRY
        + 2 * sc.HEARTBEAT
        + CALL_TIMEOUT
        + ACQUIRE_RETRY_MAX
        + 0.5  # the longest record, and the scheduling of the iteration
        + backoff
    )


@contextlib.contextmanager
def _captured_logs(world: World) -> Iterator[None]:
    logger = logging.getLogger("process_balancer")
    handler = TraceHandler(world, logging.INFO if world.verbose else logging.WARNING)
    saved = (logger.level, logger.propagate, logger.handlers[:])
    logger.handlers = [handler]
    logger.setLevel(handler.level)
    logger.propagate = False
    try:
        yield
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers = saved[2]


def run(scenario: sc.Scenario, *, verbose: bool = False) -> Result:
    """Simulate ``scenario``; the result holds every violation found (the run stops at the
    first one) and the trace."""
    world = World(scenario, verbose=verbose)
    checker = world.checker
    sched = world.sched

    def after_step() -> None:
        if checker.violations:
            raise Stop()

    sched.after_step = after_step
    start = sched.now
    with _captured_logs(world):
        try:
            for index, capacity in enumerate(scenario.capacities):
                world.spawn_process(f"p{index + 1}", capacity)
            for fault in scenario.active_faults:
                sched.call_at(start + fault.at, functools.partial(world.apply, fault))
            quiet = start + scenario.quiet_at
            if scenario.noise:
                sched.call_at(start + sc.FAULTS_END, world.calls_quiet)
            sched.run_until(quiet)
            checker.quiet_at = scenario.quiet_at
            bound = settle_bound(world.pending_backoff(), scenario.clock_set_back, scenario.grace)
            sched.run_until(quiet + bound + FINAL_WINDOW)
            _check_settled(world, scenario.quiet_at, bound)
        except Stop:
            pass
        finally:
            for name, task, error in world.all_tasks_errors():
                checker.fail(
                    "liveness", world.elapsed(), f"thread {task} of {name} died: {error!r}"
                )
            owners = [p.owner for p in world.runs.values()] + [world.sim_owner]
            sched.close(owners)
    return Result(
        scenario,
        checker.violations,
        world.trace,
        sched.steps,
        sched.now - start,
        checker.records,
        checker.refused,
    )


def _holders(world: World, now: float) -> list[SimProcess]:
    """The live runs that hold their names: with stable identities, a run waiting for its
    name while another live run of it holds it (a restart beside a run that came back) runs
    nothing by design and is left out; two runs of one name both holding it is a failure."""
    alive = [p for p in world.runs.values() if p.alive]
    holders = [
        p
        for p in alive
        if p.manager._joined_once
        or not any(q is not p and q.name == p.name and q.manager._joined_once for q in alive)
    ]
    names = [p.name for p in holders]
    for name in sorted({n for n in names if names.count(n) > 1}):
        runs = ", ".join(p.label for p in holders if p.name == name)
        world.checker.fail("liveness", now, f"runs {runs} of {name} all hold the name")
    return holders


def _check_settled(world: World, quiet_at: float, bound: float) -> None:
    """Completeness, balance, capacity and liveness, once the faults have been over long
    enough."""
    checker = world.checker
    now = world.elapsed()
    fail = checker.fail
    snapshot = world.server.snapshot()
    members = {m.identity for m in snapshot.members}
    live = _holders(world, now)
    for process in world.runs.values():
        if process.state == "stopping" or (process.stop_asked is not None and process.alive):
            fail("liveness", now, f"{process.label} was asked to stop and has not exited")
        elif process.exit_code not in (None, 0):
            fail("liveness", now, f"{process.label} exited with {process.exit_code}")
    for process in live:
        if process.name not in members:
            fail("liveness", now, f"{process.name} runs but is not a member of the group")
        if process.last_heartbeat < world.sched.now - sc.HEARTBEAT - CALL_TIMEOUT - 0.5:
            fail(
                "liveness",
                now,
                f"{process.name} has not heartbeaten since "
                f"{process.last_heartbeat - world.start:.2f}s",
            )
    if not live:
        return  # nobody left to run anything (or to compute an assignment)
    if snapshot.version != snapshot.assignment_version:
        fail(
            "balance",
            now,
            f"the assignment is stale (v{snapshot.assignment_version} for v{snapshot.version})",
        )
        return
    active = [p for p in live if p.state == "running"]
    counts = effective_counts(snapshot)
    slots = [(job, index) for job, count in sorted(counts.items()) for index in range(count)]
    capacity = sum(p.capacity for p in active)
    assigned = snapshot.assignment
    for process in live:
        mine = {
            (job, index)
            for job, indexes in assigned.get(process.name, {}).items()
            for index in indexes
        }
        running = {
            (job, index)
            for job, indexes in process.manager.supervisor.running().items()
            for index in indexes
        }
        if process.state == "quiet" and mine:
            fail("balance", now, f"{process.name} is quiet and was assigned {sorted(mine)}")
        if mine != running:
            fail("balance", now, f"{process.name} runs {sorted(running)}, assigned {sorted(mine)}")
        if len(mine) > process.capacity:
            fail(
                "capacity",
                now,
                f"{process.name} was assigned {len(mine)} slots, max_threads {process.capacity}",
            )
    spare = [
        p.name for p in active if sum(map(len, assigned.get(p.name, {}).values())) < p.capacity
    ]
    unplaced = [s for job, indexes in world.server.unplaced().items() for s in indexes]
    if unplaced and spare:
        fail("capacity", now, f"slots unplaced ({unplaced}) while {spare} have room")
    for job, _ in world.scenario.jobs:
        per = {
            p.name: len(assigned.get(p.name, {}).get(job, ())) for p in active if p.name in spare
        }
        for a in per:
            for b in per:
                cap_a = world.processes[a].capacity
                if cap_a == world.processes[b].capacity and per[a] - per[b] > 1:
                    fail("balance", now, f"job {job}: {a} runs {per[a]} slots, {b} {per[b]}")
    expected = min(len(slots), capacity)
    recent = [s for s in slots if checker.last_start(s) >= now - FINAL_WINDOW]
    if len(recent) < expected:
        idle = [s for s in slots if s not in recent]
        fail("completeness", now, f"{expected} slots should run, {len(recent)} do; idle: {idle}")
    if expected == len(slots):
        for slot in slots:
            first = checker.first_run_after_quiet(slot)
            if first is None or first > quiet_at + bound:
                shown = "never" if first is None else f"at {first:.2f}s"
                fail(
                    "completeness",
                    now,
                    f"slot {slot[0]}:{slot[1]} ran {shown} after the faults ended at "
                    f"{quiet_at:.2f}s (bound {bound:.2f}s)",
                )


def shrink(result: Result, *, budget: int = 60) -> Result:
    """Drop faults (and then the call noise) while the run still fails; returns the smallest
    failing result found within ``budget`` runs."""
    best = result
    scenario = result.scenario
    kept = list(range(len(scenario.faults))) if scenario.kept is None else list(scenario.kept)
    runs = 0
    if scenario.noise:
        trial = run(scenario.keep(tuple(kept), noise=False))
        runs += 1
        if trial.failed:
            best, scenario = trial, trial.scenario
    changed = True
    while changed and runs < budget:
        changed = False
        for index in list(kept):
            if runs >= budget:
                break
            trial_kept = [i for i in kept if i != index]
            trial = run(scenario.keep(tuple(trial_kept), noise=bool(scenario.noise)))
            runs += 1
            if trial.failed:
                kept, best, scenario, changed = trial_kept, trial, trial.scenario, True
    return best


def format_result(result: Result, *, lines: int = 60) -> str:
    """The violation, the scenario and the end of the trace, for a person."""
    out = [result.scenario.describe()]
    for violation in result.violations:
        out.append(f"VIOLATION ({violation.invariant}) at {violation.at:.3f}s: {violation.detail}")
    trace = result.trace[-lines:] if lines else result.trace
    if len(result.trace) > len(trace):
        out.append(f"... {len(result.trace) - len(trace)} earlier trace lines (--trace all)")
    out.extend(f"{at:9.3f}s {who:>5} {text}" for at, who, text in trace)
    return "\n".join(out)
