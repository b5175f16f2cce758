"""Fault scenarios against a group of real runner processes, and the figures they yield.

``tests/integration/test_faults.py`` asserts the invariants on these figures;
``bench/chaos.py`` prints them. Every scenario runs three ``process-balancer run`` processes
of one job with six slots (``FencedJob``: iterations of three 30 ms records, each record a
write to a fenced store on the test Redis, never on the backend under test). On Redis and
PostgreSQL each runner reaches the backend through a proxy of its own, so one runner's link
can be cut. Once the group runs
2/2/2 the scenario injects its fault, ends it, and the driver waits for the group to be whole
and balanced again, then stops every runner with SIGTERM and reads the iteration log:

* takeover: seconds from the fault's start until every slot ran a working iteration (its
  claim accepted by the fenced store) on a process other than the faulted one;
* recovery: seconds from the fault's end after which the group stayed whole and balanced:
  in every 0.6 s, every slot ran a working iteration and every live runner its share;
* overlaps: iterations still running when another iteration of their slot started;
  unfenced: those whose landed writes interleave in the store with the other's (fencing did
  not stop the older holder);
* refused: claims and writes the store refused for a stale token;
* regressions: iterations that started with a token lower than or equal to an earlier one
  (not a faulted runner resuming with its pre-fault token, which the store refuses);
* alive: runners still running at the end, out of those that should be.
"""

from __future__ import annotations

import contextlib
import datetime
import random
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .harness import IterationLog, Process, wait_until, write_config
from .proxy import Proxy
from .servers import RedisServer, clockshift_library

JOB_ID = "q"
SLOTS = 6
RUNNERS = 3
RECORDS = 3
RECORD_TIME = 0.03
#: The window a "does every slot run now" question looks at (several 0.1 s iterations).
RECENT = 0.6


@dataclass
class Timings:
    """How long each fault lasts. The defaults are the benchmark's; tests use shorter ones."""

    lock_ttl: float = 30.0  # runtime_lock_timeout of the job (the product's default)
    pause: float = 7.0  # SIGSTOP of a runner, past the lock TTL below
    pause_lock_ttl: float = 5.0  # runtime_lock_timeout during the SIGSTOP scenario
    stall: float = 8.0  # Redis SIGSTOP: past process_expiry, within the lock TTL
    long_stall: float = 40.0  # Redis SIGSTOP past the lock TTL
    partition: float = 6.0  # one runner cut off or blackholed
    clock_step: float = 20.0  # seconds the Redis clock jumps ahead
    kill_loop: float = 20.0  # seconds of killing a random runner ...
    kill_every: float = 4.0  # ... this often, and starting a fresh one in its place
    settle: float = 30.0  # wait this long for the first 2/2/2
    recovery_timeout: float = 20.0  # wait this long for the group to be whole after a fault
    observe: float = 3.0  # keep running this long before the fault and after recovery
    seed: int = 0


@dataclass
class Setup:
    """Where a scenario runs: the backend under test and the fenced store."""

    kind: str  # redis | postgresql | sqlite
    backend_url: str
    namespace: str
    store_url: str
    workdir: Path
    redis: RedisServer | None = None  # the Redis backend's own server (kind == "redis")


@dataclass
class Figures:
    scenario: str
    backend: str
    takeover: float | None = None
    recovery: float | None = None
    overlaps: int = 0
    unfenced: int = 0
    refused: int = 0
    regressions: int = 0
    alive: int = 0
    expected_alive: int = 0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        def seconds(value: float | None, applies: bool = True) -> str:
            if not applies:
                return "    —"
            return "never" if value is None else f"{value:4.1f}s"

        return (
            f"{self.backend:<10} {self.scenario:<11} "
            f"takeover {seconds(self.takeover, self.scenario in TAKEOVER)}  "
            f"recovery {seconds(self.recovery)}  "
            f"overlaps {self.overlaps:3d} (unfenced {self.unfenced:3d})  "
            f"refused {self.refused:4d}  regressions {self.regressions:3d}  "
            f"alive {self.alive}/{self.expected_alive}"
            + (f"  [{'; '.join(self.notes)}]" if self.notes else "")
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Fault:
    started: float
    ended: float
    faulted: frozenset[int] = frozenset()  # pids whose slots must move to peers
    takeover: float | None = None  # set by scenarios that measure it themselves
    measures_takeover: bool = True


@dataclass
class Runner:
    name: str
    process: Process
    proxy: Proxy | None
    expected_alive: bool = True

    @property
    def pid(self) -> int:
        return self.process.pid


class Group:
    """Runners of one FencedJob with six slots, each behind a proxy of its own."""

    def __init__(self, setup: Setup, *, lock_ttl: float, skew: float = 0.0) -> None:
        self.setup = setup
        #: seconds the first runner's wall clock is off (0: none is)
        self.skew = skew
        self.log = IterationLog(setup.workdir / "iterations.jsonl")
        self.lock_ttl = lock_ttl
        self.runners: list[Runner] = []
        self._count = 0

    def _config(self, name: str, backend_url: str) -> Path:
        setup = self.setup
        job = {
            "class": "support.jobs:FencedJob",
            "workers": SLOTS,
            "records": RECORDS,
            "record_time": RECORD_TIME,
            "runtime_lock_timeout": self.lock_ttl,
            "log_path": str(self.log.path),
            "store_url": setup.store_url,
            "store_prefix": f"{setup.namespace}:store",
        }
        return write_config(
            setup.workdir / f"{name}.yml",
            backend=backend_url,
            namespace=setup.namespace,
            jobs={JOB_ID: job},
            shutdown_timeout=5,
        )

    def start(self) -> Runner:
        name = f"r{self._count}"
        self._count += 1
        proxy = None
        url = self.setup.backend_url
        if self.setup.kind != "sqlite":
            from urllib.parse import urlsplit

            parts = urlsplit(url)
            proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 0)
            url = proxy.url(url)
        env = None
        if self.skew and self._count == 1:
            offset = self.setup.workdir / f"{name}.clock"
            offset.write_text(f"{self.skew:+g}")
            env = {"LD_PRELOAD": str(clockshift_library()), "PB_CLOCK_OFFSET_FILE": str(offset)}
        process = Process(self._config(name, url), self.setup.workdir, name, env=env)
        runner = Runner(name, process, proxy)
        self.runners.append(runner)
        return runner

    def kill(self, runner: Runner) -> None:
        runner.process.kill()
        runner.expected_alive = False
        self.log.dead[runner.pid] = runner.process.died_at or time.time()

    def live(self) -> list[Runner]:
        return [r for r in self.runners if r.expected_alive]

    def live_pids(self) -> set[int]:
        return {r.pid for r in self.live()}

    def alive_count(self) -> int:
        return sum(1 for r in self.live() if r.process.popen.poll() is None)

    def close(self) -> None:
        """SIGTERM every runner still running and wait for it; then free the proxies."""
        for runner in self.runners:
            if runner.proxy is not None:
                runner.proxy.heal()
            if runner.process.popen.poll() is None:
                with contextlib.suppress(OSError):
                    runner.process.send(signal.SIGCONT)
                    runner.process.send(signal.SIGTERM)
        for runner in self.runners:
            try:
                runner.process.wait(15)
            except Exception:
                runner.process.kill()
            self.log.dead.setdefault(runner.pid, runner.process.died_at or time.time())
            runner.process.stop()
            if runner.proxy is not None:
                runner.proxy.close()


# -- the scenarios -----------------------------------------------------------------------


def kill_one(group: Group, setup: Setup, t: Timings) -> Fault:
    """kill -9 of one runner; its slots must run on the two others."""
    victim = group.runners[0]
    started = time.time()
    group.kill(victim)
    return Fault(started, started, frozenset({victim.pid}))


def sigstop_runner(group: Group, setup: Setup, t: Timings) -> Fault:
    """SIGSTOP of one runner past its lock TTL, then SIGCONT: a peer takes its slots over;
    its writes after waking must be refused, and it must rejoin and run its share."""
    victim = group.runners[0]
    started = time.time()
    victim.process.send(signal.SIGSTOP)
    try:
        time.sleep(t.pause)
    finally:
        victim.process.send(signal.SIGCONT)
    return Fault(started, time.time(), frozenset({victim.pid}))


def _kill_with_a_skewed_clock(victim_index: int) -> Callable[[Group, Setup, Timings], Fault]:
    """kill -9 of runner ``victim_index`` while the first runner's wall clock is off by the
    scenario's ``SKEWS`` seconds (from its start). Killing another runner: the skewed one must
    take its share of the slots over as fast as without skew, overlapping nobody. Killing the
    skewed one: its slots must move as fast as any dead runner's."""

    def kill(group: Group, setup: Setup, t: Timings) -> Fault:
        skewed, other = group.runners[0], group.runners[1]

        def first_stamp(runner: Runner) -> float:
            line = runner.process.log()[:23]
            return datetime.datetime.strptime(line, "%Y-%m-%d %H:%M:%S,%f").timestamp()

        # Both started within a moment of each other: their first log lines are skew apart.
        if abs(first_stamp(skewed) - first_stamp(other) - group.skew) > 3.0:
            raise AssertionError(f"runner {skewed.name}'s clock is not {group.skew:+g}s off")
        victim = group.runners[victim_index]
        started = time.time()
        group.kill(victim)
        return Fault(started, started, frozenset({victim.pid}))

    return kill


def redis_restart_empty(group: Group, setup: Setup, t: Timings) -> Fault:
    """The Redis backend is killed and a new, empty one starts on the same port."""
    assert setup.redis is not None
    started = time.time()
    setup.redis.restart_empty()
    return Fault(started, time.time(), measures_takeover=False)


def _stall(length: str) -> Callable[[Group, Setup, Timings], Fault]:
    """A Redis SIGSTOP lasting ``Timings.<length>`` seconds."""

    def stall(group: Group, setup: Setup, t: Timings) -> Fault:
        assert setup.redis is not None
        started = time.time()
        setup.redis.pause()
        try:
            time.sleep(getattr(t, length))
        finally:
            setup.redis.resume()
        return Fault(started, time.time(), measures_takeover=False)

    return stall


def _partition(kind: str) -> Callable[[Group, Setup, Timings], Fault]:
    def partition(group: Group, setup: Setup, t: Timings) -> Fault:
        victim = group.runners[0]
        assert victim.proxy is not None
        started = time.time()
        if kind == "cut":
            victim.proxy.cut()
        else:
            victim.proxy.blackhole()
        try:
            time.sleep(t.partition)
        finally:
            victim.proxy.heal(deliver_held=kind == "blackhole")
        return Fault(started, time.time(), frozenset({victim.pid}))

    return partition


def clock_step(group: Group, setup: Setup, t: Timings) -> Fault:
    """The Redis server's wall clock jumps ahead (an NTP step, a VM restored)."""
    assert setup.redis is not None
    started = time.time()
    setup.redis.step_clock(t.clock_step)
    return Fault(started, time.time(), measures_takeover=False)


def garbage_everywhere(group: Group, setup: Setup, t: Timings) -> Fault:
    """Every key of the group's namespace on the Redis backend is overwritten with a string
    that is not what the runner wrote (a bad restore, a foreign tool, a bug)."""
    assert setup.redis is not None
    client = setup.redis.client()
    try:
        started = time.time()
        keys = list(client.scan_iter(match=f"{setup.namespace}:*", count=1000))
        with client.pipeline(transaction=True) as pipe:
            for key in keys:
                pipe.delete(key)
                pipe.set(key, "\x00garbage{[")
            pipe.execute()
    finally:
        client.close()
    return Fault(started, time.time(), measures_takeover=False)


def huge_count(group: Group, setup: Setup, t: Timings) -> Fault:
    """The job's worker count in the Redis backend is set to 10**15 behind the clients'
    checks for ``partition`` seconds, then back to 6."""
    assert setup.redis is not None
    client = setup.redis.client()
    counts = f"{setup.namespace}:counts"
    try:
        started = time.time()
        client.hset(counts, JOB_ID, str(10**15))
        time.sleep(t.partition)
        client.hset(counts, JOB_ID, str(SLOTS))
    finally:
        client.close()
    return Fault(started, time.time(), measures_takeover=False)


def kill_loop(group: Group, setup: Setup, t: Timings) -> Fault:
    """Every few seconds kill -9 a random runner and start a fresh one in its place."""
    rng = random.Random(t.seed)
    kills: list[tuple[float, int]] = []
    started = time.time()
    while time.time() - started < t.kill_loop:
        victim = rng.choice(group.live())
        kills.append((time.time(), victim.pid))
        group.kill(victim)
        group.start()
        time.sleep(t.kill_every)
    ended = time.time()
    takeovers = [group.log.whole_again(at, SLOTS, exclude=frozenset({pid})) for at, pid in kills]
    worst = None if None in takeovers else max(t for t in takeovers if t is not None)
    return Fault(started, ended, takeover=worst)


#: name -> (scenario, the backends it applies to, what it does)
SCENARIOS: dict[str, tuple[Callable[[Group, Setup, Timings], Fault], set[str], str]] = {
    "kill": (kill_one, {"redis", "postgresql", "sqlite"}, "kill -9 of one runner"),
    "sigstop": (
        sigstop_runner,
        {"redis", "postgresql", "sqlite"},
        "SIGSTOP of one runner past its lock TTL, then SIGCONT",
    ),
    "restart": (redis_restart_empty, {"redis"}, "Redis killed and restarted empty"),
    "stall": (_stall("stall"), {"redis"}, "Redis SIGSTOPped past process_expiry"),
    "long-stall": (_stall("long_stall"), {"redis"}, "Redis SIGSTOPped past the lock TTL"),
    "cut": (_partition("cut"), {"redis", "postgresql"}, "one runner's link reset, then healed"),
    "blackhole": (
        _partition("blackhole"),
        {"redis", "postgresql"},
        "one runner's link blackholed, then healed with the held bytes delivered late",
    ),
    "clock": (clock_step, {"redis"}, "the Redis server's clock steps forward"),
    "garbage": (garbage_everywhere, {"redis"}, "garbage written to every key of the group"),
    "huge-count": (huge_count, {"redis"}, "a worker count of 10**15 written behind the checks"),
    "skew-ahead": (
        _kill_with_a_skewed_clock(1),
        {"redis", "postgresql"},  # SQLite's processes share one host, so one clock
        "kill -9 of a runner while another runner's wall clock is 20 s ahead of the others'",
    ),
    "skew-ahead-dies": (
        _kill_with_a_skewed_clock(0),
        {"redis", "postgresql"},
        "kill -9 of the runner whose wall clock is 20 s ahead of the others'",
    ),
    "skew-behind": (
        _kill_with_a_skewed_clock(1),
        {"redis", "postgresql"},  # SQLite's processes share one host, so one clock
        "kill -9 of a runner while another runner's wall clock is 20 s behind the others'",
    ),
    "skew-behind-dies": (
        _kill_with_a_skewed_clock(0),
        {"redis", "postgresql"},
        "kill -9 of the runner whose wall clock is 20 s behind the others'",
    ),
    "kill-loop": (
        kill_loop,
        {"redis", "postgresql", "sqlite"},
        "kill -9 of a random runner every few seconds, a fresh one started in its place",
    ),
}
#: Scenarios with a faulted runner whose slots must move while the fault lasts.
#: Seconds the first runner's wall clock is off in a scenario (from its start).
SKEWS = {
    "skew-ahead": 20.0,
    "skew-behind": -20.0,
    "skew-ahead-dies": 20.0,
    "skew-behind-dies": -20.0,
}
TAKEOVER = {"kill", "sigstop", "cut", "blackhole", "kill-loop", *SKEWS}


def scenario_ttl(name: str, t: Timings) -> float:
    return t.pause_lock_ttl if name == "sigstop" else t.lock_ttl


def run(name: str, setup: Setup, t: Timings) -> Figures:
    """Run one scenario on ``setup`` and return its figures (the group is stopped)."""
    scenario, kinds, _ = SCENARIOS[name]
    if setup.kind not in kinds:
        raise ValueError(f"scenario {name!r} does not apply to the {setup.kind} backend")
    figures = Figures(name, setup.kind)
    group = Group(setup, lock_ttl=scenario_ttl(name, t), skew=SKEWS.get(name, 0.0))
    try:
        for _ in range(RUNNERS):
            group.start()
        began = time.time()
        wait_until(
            lambda: group.log.balanced_again(began, SLOTS, group.live_pids()) is not None,
            t.settle,
            interval=0.2,
            message=f"{RUNNERS} runners to run 2 slots each",
        )
        time.sleep(t.observe)

        fault = scenario(group, setup, t)

        def recovered() -> bool:
            now = time.time()
            if now - fault.ended < RECENT:  # the window must hold only starts after the fault
                return False
            live = group.live_pids()
            return group.log.recovered_after(now - 0.1, now, SLOTS, live) is not None

        with contextlib.suppress(AssertionError):
            wait_until(recovered, t.recovery_timeout, interval=0.2, message="recovery")
        # Consequences may show a heartbeat or an expiry later (a process noticing that the
        # backend's state or clock changed stops its slots for a while): keep watching, and
        # wait for the group once more if it is no longer whole.
        time.sleep(t.observe)
        if not recovered():
            with contextlib.suppress(AssertionError):
                wait_until(recovered, t.recovery_timeout, interval=0.2, message="recovery")
            time.sleep(t.observe)
        until = time.time()
        figures.alive = group.alive_count()
        figures.expected_alive = len(group.live())
        live = group.live_pids()
    finally:
        group.close()

    log = group.log
    if fault.takeover is not None or not fault.measures_takeover:
        figures.takeover = fault.takeover
    else:
        figures.takeover = log.whole_again(fault.started, SLOTS, exclude=fault.faulted)
    figures.recovery = log.recovered_after(fault.ended, until, SLOTS, live)
    # An iteration that was still running when another of its slot started counts once,
    # however many iterations started during it (a paused holder overlaps dozens).
    figures.overlaps = len({(first.pid, first.it) for first, _ in log.overlaps()})
    figures.unfenced = len({(first.pid, first.it) for first, _ in log.unfenced_overlaps()})
    figures.refused = log.refused_writes()
    # A faulted runner (frozen, cut off) that resumes an iteration whose lock it took before
    # the fault starts it late with the token it was given then; the store refusing that
    # claim is fencing at work (counted in `refused`), not a token handed out again.
    figures.regressions = len(
        [
            (earlier, later)
            for earlier, later in log.token_regressions()
            if not (
                later.pid in fault.faulted and later.start >= fault.started and not later.claim_ok
            )
        ]
    )
    if name == "kill-loop":
        figures.notes.append(f"seed {t.seed}")
    return figures
