"""What one seed simulates: the group, its jobs, the network's noise and the faults.

A :class:`Scenario` is drawn from the seed alone (:func:`generate`), so a seed names a whole
run. Shrinking keeps the seed and drops faults (:meth:`Scenario.keep`), which is why a fault
that targets a process that is not running at that moment does nothing instead of failing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

#: The runtime settings every simulated process uses (seconds).
HEARTBEAT = 1.0
EXPIRY = 3.0
#: The takeover_grace of a scenario's jobs is one of these.
GRACES = (0.5, 1.0)
SHUTDOWN = 3.0
#: Faults begin after this many seconds (the group has formed) and are all over by
#: FAULTS_END at the latest; their effects are then given time to heal.
FAULTS_START = 2.0
FAULTS_END = 14.0
#: Seconds before its deadline at which a holder is cut off (LeaseKeeper.MARGIN).
MARGIN = 0.2

KINDS = (
    "crash",
    "pause",
    "partition",
    "slow",
    "wipe",
    "restore",
    "clock",
    "count",
    "quiet",
    "stop",
    "join",
    "raise",
    "skew",
)


@dataclass(frozen=True)
class Fault:
    """One fault: ``kind`` at simulated second ``at`` (from the start of the run)."""

    at: float
    kind: str
    target: str = ""  # a process name, or a job id for count and raise
    value: float = 0.0  # seconds it lasts, a clock step, a count or a capacity
    mode: str = ""  # partition: blackhole or refused

    @property
    def end(self) -> float:
        lasting = self.kind in ("pause", "partition", "slow", "restore", "raise")
        return self.at + (self.value if lasting else 0.0)

    def describe(self) -> str:
        target = f" {self.target}" if self.target else ""
        if self.kind in ("pause", "raise", "slow"):
            return f"{self.kind}{target} for {self.value:.2f}s"
        if self.kind == "partition":
            return f"partition{target} ({self.mode}) for {self.value:.2f}s"
        if self.kind == "restore":
            return f"backend restored after {self.value:.2f}s to the state of now"
        if self.kind in ("clock", "skew"):
            return f"{self.kind}{target} {self.value:+.1f}s"
        if self.kind == "count":
            return f"count {self.target} -> {int(self.value)}"
        if self.kind == "join":
            return f"join {self.target} (max_threads {int(self.value)})"
        if self.kind == "restart":
            return f"restart{target} (a new run of its stable identity)"
        return f"{self.kind}{target}"


@dataclass(frozen=True)
class Scenario:
    seed: int
    capacities: tuple[int, ...]  # max_threads of the processes present at the start
    jobs: tuple[tuple[str, int], ...]  # job id, workers in the config
    lock_ttl: float
    noise: float  # probability that a call meets a fault while faults last
    faults: tuple[Fault, ...]
    #: Indexes into the generated faults that are kept (all unless shrunk).
    kept: tuple[int, ...] | None = None
    #: Forward clock steps past the grace were drawn (see :func:`generate`).
    large_steps: bool = False
    #: The jobs' takeover_grace.
    grace: float = 1.0
    #: Processes run with stable identities (``stable_identity`` = their name), and a crashed
    #: or stopped one may be restarted under its name (``restart`` faults).
    stable: bool = False

    @property
    def active_faults(self) -> tuple[Fault, ...]:
        if self.kept is None:
            return self.faults
        return tuple(self.faults[i] for i in self.kept)

    @property
    def quiet_at(self) -> float:
        """When the last fault is over (every pause, partition and job failure healed)."""
        ends = [f.end for f in self.active_faults]
        if self.noise:
            ends.append(FAULTS_END)
        return max([FAULTS_START, *ends])

    def keep(self, indexes: tuple[int, ...], noise: bool = True) -> Scenario:
        return replace(self, kept=tuple(sorted(indexes)), noise=self.noise if noise else 0.0)

    @property
    def clock_set_back(self) -> float:
        """Seconds the backend's clock was set back in all: memberships and locks live that
        much longer on it, so a crashed process is noticed that much later."""
        return -sum(f.value for f in self.active_faults if f.kind == "clock" and f.value < 0)

    def describe(self) -> str:
        jobs = ", ".join(f"{job} x{count}" for job, count in self.jobs)
        lines = [
            f"seed {self.seed}: {len(self.capacities)} processes"
            f"{' with stable identities' if self.stable else ''} (max_threads "
            f"{', '.join(map(str, self.capacities))}), jobs {jobs}, lock TTL {self.lock_ttl:g}s, "
            f"takeover_grace {self.grace:g}s, "
            f"call fault rate {self.noise:.0%} until {FAULTS_END:g}s",
        ]
        for index, fault in enumerate(self.faults):
            if self.kept is None or index in self.kept:
                lines.append(f"  fault {index}: at {fault.at:6.2f}s {fault.describe()}")
        return "\n".join(lines)


def generate(seed: int, *, large_steps: bool = False) -> Scenario:
    """The scenario of ``seed`` (``large_steps``: forward clock steps past the grace too)."""
    rng = random.Random(f"scenario:{seed}")
    capacities = tuple(rng.randint(2, 5) for _ in range(rng.randint(2, 4)))
    jobs = [("a", rng.randint(1, 6))]
    if rng.random() < 0.5:
        jobs.append(("b", rng.randint(0, 4)))
    lock_ttl = rng.choice((3.0, 5.0, 10.0))
    grace = rng.choice(GRACES)
    # The largest forward step of the backend's clock no takeover can outrun: the grace a peer
    # waits past a holder's deadline, plus the margin by which the holder stops early.
    covered = grace + MARGIN
    noise = rng.choice((0.0, 0.0, 0.02, 0.05, 0.1))
    names = [f"p{i + 1}" for i in range(len(capacities))]
    faults = []
    for _ in range(rng.randint(0, 6)):
        kind = rng.choice(KINDS)
        at = round(rng.uniform(FAULTS_START, FAULTS_END - 4.0), 3)
        room = FAULTS_END - at
        target = rng.choice(names)
        if kind == "pause":
            fault = Fault(at, kind, target, round(rng.uniform(0.2, min(room, 2 * lock_ttl)), 3))
        elif kind == "partition":
            mode = rng.choice(("blackhole", "refused"))
            fault = Fault(at, kind, target, round(rng.uniform(0.2, room), 3), mode)
            if rng.random() < 0.5:
                # Links often degrade before they fail: every call slow for a while first.
                lead = round(rng.uniform(0.5, 2.0), 3)
                faults.append(Fault(round(at - lead, 3), "slow", target, lead))
        elif kind == "slow":
            fault = Fault(at, kind, target, round(rng.uniform(0.5, min(room, 4.0)), 3))
        elif kind == "restore":
            fault = Fault(at, kind, "", round(rng.uniform(0.5, min(room, 5.0)), 3))
        elif kind == "clock":
            # Forward steps up to takeover_grace plus the cut-off margin (1.2 s here) are
            # covered by the grace; larger ones rely on a heartbeat noticing the step before a
            # takeover, which is not guaranteed (docs/simulation.md, "known limits"), and
            # are drawn only with ``large_steps``.
            if rng.random() < 0.5:
                step = -rng.uniform(1.0, 20.0)
            else:
                step = rng.uniform(0.6, 20.0 if large_steps else covered)
            fault = Fault(at, kind, "", round(step, 2))
        elif kind == "skew":
            fault = Fault(at, kind, target, round(rng.uniform(-20.0, 20.0), 2))
        elif kind == "count":
            job = rng.choice([job for job, _ in jobs])
            fault = Fault(at, kind, job, rng.choice((0, 1, 2, 3, 5, 7)))
        elif kind == "raise":
            job = rng.choice([job for job, _ in jobs])
            fault = Fault(at, kind, job, round(rng.uniform(0.5, min(room, 4.0)), 3))
        elif kind == "join":
            name = f"p{len(names) + 1}"
            names.append(name)
            fault = Fault(at, kind, name, rng.randint(2, 5))
        elif kind == "wipe":
            fault = Fault(at, kind)
        else:  # crash, quiet, stop
            fault = Fault(at, kind, target)
        faults.append(fault)
    if any(f.kind in ("wipe", "restore") for f in faults):
        # A backend that loses its state *and* whose clock went back may grant a token below
        # one it granted before (tokens are at least its clock in microseconds, the counter is
        # gone): a documented limit, not simulated (docs/simulation.md).
        most = 20.0 if large_steps else covered
        faults = [
            replace(f, value=min(abs(f.value), most)) if f.kind == "clock" else f for f in faults
        ]
    # Drawn from a stream of their own, so the faults above are those of every earlier
    # version of this seed.
    extra = random.Random(f"scenario-stable:{seed}")
    stable = extra.random() < 0.5
    if stable:
        sizes = dict(zip(names, capacities, strict=False))
        sizes.update({f.target: int(f.value) for f in faults if f.kind == "join"})
        for fault in list(faults):
            if fault.kind in ("crash", "stop") and extra.random() < 0.7:
                # Mostly within process_expiry (its slots wait for it), sometimes after.
                delay = (
                    extra.uniform(0.1, 4.0)
                    if fault.kind == "crash"
                    else extra.uniform(SHUTDOWN + 0.5, SHUTDOWN + 4.0)
                )
                at = round(fault.at + delay, 3)
                faults.append(Fault(at, "restart", fault.target, sizes.get(fault.target, 2)))
            elif (
                fault.kind in ("pause", "partition")
                and fault.value > EXPIRY + grace + 4.0
                and not any(
                    other is not fault
                    and other.target == fault.target
                    and other.kind in ("pause", "partition")
                    and other.at < fault.end
                    and fault.at < other.end
                    for other in faults
                )
                and extra.random() < 0.5
            ):
                # An orchestrator replaces a run it cannot reach (a frozen or cut-off node)
                # by a new run of the same name, while the old one still exists. The old run
                # stays cut off until its membership (extended by a late heartbeat, at
                # worst) has ended and the new run has joined; a run back sooner is a
                # second live process of one name, which waits for good by design.
                at = round(fault.at + extra.uniform(0.1, 1.0), 3)
                faults.append(Fault(at, "restart", fault.target, sizes.get(fault.target, 2)))
    faults.sort(key=lambda f: f.at)
    return Scenario(
        seed,
        capacities,
        tuple(jobs),
        lock_ttl,
        noise,
        tuple(faults),
        large_steps=large_steps,
        grace=grace,
        stable=stable,
    )
