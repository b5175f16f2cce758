"""Slot handoff times between real ``process-balancer run`` processes, with default settings.

One job with 6 workers, iterations of 4 records x 0.025 s, two processes A and B on the local
Redis. Each run, in a fresh namespace:

* join: A runs all 6 slots; B is started; time until B runs its 3;
* TERM: SIGTERM to B; time until A runs all 6 again;
* quiet: a new B takes its 3; SIGUSR1 to it; time until A runs all 6;
* SIGKILL: a new B takes its 3; SIGKILL to it; time until A runs all 6.

Every iteration logs its start and end (pid, slot, fencing token) to a Redis list, from which
the script rebuilds who ran which slot when: slots moved, overlapping iterations of one slot
and ownership flaps (A, B, A) are counted per event. The Ruby original's figures are quoted
from the DESIGN's side-by-side measurement; the gem is not installed here and is not re-run.

    python bench/rebalance.py [--repeat 3] [--observe 4] [--keep-logs]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import itertools
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
import yaml

from process_balancer.backends import open_backend, redact_url
from process_balancer.config import defaults

BENCH_DIR = Path(__file__).resolve().parent
JOB_ID = "bench"
WORKERS = 6
RECORDS = 4
RECORD_TIME = 0.025
#: Seconds of log a "who runs what now" question looks at (several 0.1 s iterations).
OWNER_WINDOW = 0.5
POLL = 0.01

#: The job class of each worker kind (``--worker``).
JOB_CLASSES = {
    "thread": "rebalance_jobs:TimedIterationJob",
    "asyncio": "rebalance_jobs:AsyncTimedIterationJob",
    "process": "rebalance_jobs:TimedIterationJob",
}

#: The DESIGN's side-by-side figures for the Ruby gem (6 workers, 2 processes, 0.1 s iterations).
RUBY = {"join": "6.0 s", "TERM": "4.5 s", "quiet": "never", "SIGKILL": "59.5 s"}
RUBY_SECONDS = {"join": 6.0, "TERM": 4.5, "SIGKILL": 59.5}

_children: list[Child] = []


class ScenarioFailed(Exception):
    pass


class Child:
    """One ``python -m process_balancer run`` process and its log file."""

    def __init__(self, name: str, config: Path, workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(BENCH_DIR), env.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        self._log = self.log_path.open("w")
        self.spawned_at = time.time()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "process_balancer", "run", "-c", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(workdir),
        )
        self.pid = self.popen.pid
        self.gone_at: float | None = None
        self.exit_expected = False
        _children.append(self)

    def signal(self, sig: int) -> float:
        if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
            self.exit_expected = True
        sent = time.time()
        self.popen.send_signal(sig)
        return sent

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(f"      | {line}" for line in text)

    def kill(self) -> float:
        sent = self.signal(signal.SIGKILL)
        self.popen.wait(10)
        self.gone_at = sent
        return sent

    def wait_exit(self, timeout: float) -> int | None:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.gone_at = self.gone_at or time.time()
        return code

    def ready_at(self) -> float | None:
        """When the process logged that it is joining (config, imports and job classes done)."""
        pattern = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*joining group")
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = pattern.match(line)
            if match:
                return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        return None

    def reap(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
            self.gone_at = self.gone_at or time.time()
        self._log.close()


@atexit.register
def _kill_children() -> None:
    for child in _children:
        with contextlib.suppress(Exception):
            child.reap()


@dataclass
class Interval:
    slot: int
    pid: int
    start: float
    end: float
    fence: int | None


@dataclass
class Event:
    """One measured event of one run."""

    name: str
    t_event: float
    min_moves: int
    timings: dict[str, float | None] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)
    t_end: float = math.inf  # end of the observation window
    moved: int | None = None
    overlaps: int = 0
    flaps: int = 0


class Group:
    """The processes of one run, the iteration log they write and the queries over it."""

    def __init__(
        self,
        client: redis.Redis,
        url: str,
        workdir: Path,
        backend: str | None = None,
        worker: str = "thread",
    ) -> None:
        self.client = client
        self.namespace = f"pbbench-rebalance-{uuid.uuid4().hex[:10]}"
        # The processes' coordination backend when it is not the log's Redis (--backend).
        self.backend = open_backend(backend, self.namespace) if backend else None
        self.log_key = f"{self.namespace}:bench-iterations"
        self.workdir = workdir
        self.events: list[dict[str, Any]] = []
        self.first_heartbeat: dict[int, float] = {}
        #: pid -> membership deadline last seen in the members set (Redis clock, same host)
        self.member_deadline: dict[int, float] = {}
        self.children: list[Child] = []
        # Only what a job needs: heartbeat_interval, process_expiry, max_threads,
        # shutdown_timeout and the lock settings keep their defaults.
        config = {
            "global": {"backend": backend or url, "namespace": self.namespace},
            "jobs": {
                JOB_ID: {
                    "class": JOB_CLASSES[worker],
                    "worker": worker,
                    "workers": WORKERS,
                    "records": RECORDS,
                    "record_time": RECORD_TIME,
                    "redis_url": url,
                    "log_key": self.log_key,
                }
            },
        }
        self.config = workdir / "process_balancer.yml"
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))

    def spawn(self, name: str) -> Child:
        child = Child(name, self.config, self.workdir)
        self.children.append(child)
        return child

    def poll(self) -> None:
        raw = self.client.lrange(self.log_key, len(self.events), -1)
        self.events.extend(json.loads(item) for item in raw)
        now = time.time()
        if self.backend is not None:
            members = [(m.identity, m.deadline * 1000) for m in self.backend.snapshot().members]
        else:
            members = [
                (identity.decode(), deadline_ms)
                for identity, deadline_ms in self.client.zrange(
                    f"{self.namespace}:members", 0, -1, withscores=True
                )
            ]
        for identity, deadline_ms in members:
            parts = identity.rsplit(":", 2)
            if len(parts) == 3 and parts[1].isdigit():
                pid = int(parts[1])
                self.first_heartbeat.setdefault(pid, now)
                self.member_deadline[pid] = deadline_ms / 1000.0

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            for child in self.children:
                code = child.popen.poll()
                if code is not None and not child.exit_expected:
                    raise ScenarioFailed(
                        f"{child.name} (pid {child.pid}) exited with {code} while waiting until "
                        f"{what}; the end of its log:\n{child.log_tail()}"
                    )
            self.poll()
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise ScenarioFailed(f"timed out after {timeout:.0f} s waiting until {what}")
            time.sleep(POLL)

    def observe(self, seconds: float) -> float:
        end = time.time() + seconds
        while (left := end - time.time()) > 0:
            self.poll()
            time.sleep(min(0.05, left))
        self.poll()
        return end

    # -- queries -----------------------------------------------------------------------------

    def starts(self, since: float, until: float = math.inf) -> list[dict[str, Any]]:
        return [e for e in self.events if e["ev"] == "start" and since <= e["t"] <= until]

    def first_starts(self, pid: int, since: float) -> dict[int, float]:
        """slot -> first iteration start by ``pid`` after ``since``."""
        result: dict[int, float] = {}
        for e in self.starts(since):
            if e["pid"] == pid:
                result.setdefault(e["slot"], e["t"])
        return result

    def running(self, now: float | None = None) -> dict[int, set[int]]:
        """pid -> slots it started iterations of in the last OWNER_WINDOW seconds."""
        now = time.time() if now is None else now
        result: dict[int, set[int]] = {}
        for e in self.starts(now - OWNER_WINDOW, now):
            result.setdefault(e["pid"], set()).add(e["slot"])
        return result

    def settled(self, expected: dict[int, int]) -> Callable[[], bool]:
        """True once, lately, each pid ran exactly its number of slots and no one else ran any."""

        def check() -> bool:
            running = self.running()
            covered = set().union(*running.values()) if running else set()
            counts = {pid: len(slots) for pid, slots in running.items()}
            return counts == expected and covered == set(range(WORKERS))

        return check

    def owners(self, until: float, window: float = 1.0) -> dict[int, int]:
        """slot -> pid of the last iteration started in ``[until - window, until]``."""
        result: dict[int, int] = {}
        for e in self.starts(until - window, until):
            result[e["slot"]] = e["pid"]
        return result

    def last_end(self, pid: int) -> float | None:
        ends = [e["t"] for e in self.events if e["ev"] == "end" and e["pid"] == pid]
        return max(ends) if ends else None

    def intervals(self) -> list[Interval]:
        gone = {c.pid: c.gone_at for c in self.children if c.gone_at is not None}
        opened: dict[str, dict[str, Any]] = {}
        result = []
        for e in self.events:
            if e["ev"] == "start":
                opened[e["it"]] = e
            elif e["ev"] == "end" and e["it"] in opened:
                s = opened.pop(e["it"])
                result.append(Interval(s["slot"], s["pid"], s["t"], e["t"], s["fence"]))
        for s in opened.values():
            # An iteration that never logged its end ran until its process died.
            end = gone.get(s["pid"]) or math.inf
            result.append(Interval(s["slot"], s["pid"], s["t"], end, s["fence"]))
        return sorted(result, key=lambda i: (i.slot, i.start))

    def cleanup(self) -> int:
        if self.backend is not None:
            self.backend.close()
        keys = list(self.client.scan_iter(match=f"{self.namespace}:*", count=1000))
        if keys:
            self.client.delete(*keys)
        return len(keys)


# -- scenarios -------------------------------------------------------------------------------


def scenario_join(group: Group, a: Child, name: str, timeout: float) -> tuple[Child, Event]:
    b = group.spawn(name)
    share = WORKERS // 2
    event = Event("join", b.spawned_at, min_moves=share)
    starts = group.wait_for(
        lambda: (s := group.first_starts(b.pid, b.spawned_at)) and len(s) >= share and s,
        timeout,
        f"{name} runs {share} slots",
    )
    t_share = sorted(starts.values())[share - 1]
    ready = b.ready_at()
    event.timings["process start included"] = t_share - b.spawned_at
    event.timings["after ready"] = None if ready is None else t_share - ready
    heartbeat = group.first_heartbeat.get(b.pid)
    event.details.append(
        "spawn -> ready (log says joining) "
        + (f"{ready - b.spawned_at:.3f} s" if ready else "not found")
        + ", -> first heartbeat seen "
        + (f"{heartbeat - b.spawned_at:.3f} s" if heartbeat else "not seen")
        + f", -> {share} slots running {t_share - b.spawned_at:.3f} s"
    )
    group.wait_for(group.settled({a.pid: share, b.pid: WORKERS - share}), timeout, "a 3/3 split")
    return b, event


def scenario_leave(
    group: Group, a: Child, b: Child, how: str, timeout: float, observe: float
) -> Event:
    """B leaves by SIGTERM, goes quiet by SIGUSR1, or dies by SIGKILL; A must take its slots."""
    # A random point in the heartbeat cycle, so that the kill's phase relative to B's last
    # heartbeat is not always the one the settle check happens to end on.
    phase = random.uniform(0, defaults.HEARTBEAT_INTERVAL)
    group.observe(phase)
    now = time.time()
    b_slots = {slot for slot, pid in group.owners(now).items() if pid == b.pid}
    sig = {"TERM": signal.SIGTERM, "quiet": signal.SIGUSR1, "SIGKILL": signal.SIGKILL}[how]
    t_sig = b.kill() if how == "SIGKILL" else b.signal(sig)
    event = Event(how, t_sig, min_moves=len(b_slots))
    event.details.append(f"signal sent after a random wait of {phase:.3f} s")
    taken = group.wait_for(
        lambda: (s := group.first_starts(a.pid, t_sig)) and b_slots <= set(s) and s,
        timeout,
        f"A runs {sorted(b_slots)} again after {how}",
    )
    t_done = max(taken[slot] for slot in b_slots)
    event.timings["from signal"] = t_done - t_sig
    if how == "SIGKILL":
        event.timings["beyond process_expiry"] = t_done - t_sig - defaults.PROCESS_EXPIRY
        deadline = group.member_deadline.get(b.pid)
        if deadline is not None:
            event.details.append(
                f"B's last heartbeat {deadline - defaults.PROCESS_EXPIRY - t_sig:+.3f} s from the "
                f"kill; its membership expired {deadline - t_sig:+.3f} s from the kill; A ran "
                f"its slots {t_done - deadline:.3f} s after that expiry"
            )
    else:
        if how == "TERM":
            code = b.wait_exit(timeout)
            event.details.append(
                f"B exited with {code} {b.gone_at - t_sig:.3f} s after TERM"
                if code is not None
                else "B did not exit"
            )
        group.poll()
        b_end = group.last_end(b.pid)
        iteration_end = max(b_end or t_sig, t_sig)
        event.timings["after running iteration ends"] = t_done - iteration_end
        event.details.append(
            f"B's last iteration ended {iteration_end - t_sig:.3f} s after the signal"
        )
    per_slot = ", ".join(f"{slot}: {taken[slot] - t_sig:.3f}" for slot in sorted(b_slots))
    event.details.append(f"A's first start per slot, s after the signal: {per_slot}")
    event.t_end = group.observe(observe)
    return event


def run_once(
    client: redis.Redis, url: str, args: argparse.Namespace, keep: Path | None
) -> tuple[list[Event], list[str]]:
    workdir = Path(tempfile.mkdtemp(prefix="pbbench-rebalance-"))
    group = Group(client, url, workdir, args.backend, args.worker)
    events: list[Event] = []
    notes: list[str] = []
    phases: list[tuple[str, float, Event | None]] = []
    timeout = args.timeout
    try:
        try:
            a = group.spawn("a")
            phases.append(("start A", a.spawned_at, None))
            group.wait_for(group.settled({a.pid: WORKERS}), timeout, "A runs all 6 slots")

            b, event = scenario_join(group, a, "b1", timeout)
            event.t_end = group.observe(args.observe)
            events.append(event)
            phases.append(("join", event.t_event, event))

            events.append(scenario_leave(group, a, b, "TERM", timeout, args.observe))
            phases.append(("TERM", events[-1].t_event, events[-1]))

            b, join2 = scenario_join(group, a, "b2", timeout)
            phases.append(("restart B before quiet", join2.t_event, None))
            events.append(scenario_leave(group, a, b, "quiet", timeout, args.observe))
            phases.append(("quiet", events[-1].t_event, events[-1]))
            t_stop = b.signal(signal.SIGTERM)
            phases.append(("TERM to the quiet B", t_stop, None))
            if b.wait_exit(timeout) is None:
                notes.append("the quiet B did not exit within the timeout after TERM")

            b, join3 = scenario_join(group, a, "b3", timeout)
            phases.append(("restart B before SIGKILL", join3.t_event, None))
            events.append(scenario_leave(group, a, b, "SIGKILL", timeout, args.observe))
            phases.append(("SIGKILL", events[-1].t_event, events[-1]))
        except ScenarioFailed as exc:
            notes.append(f"run stopped early: {exc}")
        for child in group.children:
            if child.popen.poll() is None:
                child.signal(signal.SIGTERM)
        for child in group.children:
            if child.wait_exit(30) is None:
                notes.append(f"{child.name} did not exit within 30 s of TERM; killed")
                child.kill()
        group.poll()
        analyse(group, events, phases, notes)
    finally:
        for child in group.children:
            child.reap()
        deleted = group.cleanup()
        notes.append(f"namespace {group.namespace}: {deleted} key(s) deleted")
        if keep is not None:
            target = keep / group.namespace
            shutil.copytree(workdir, target)
            notes.append(f"process logs kept in {target}")
        shutil.rmtree(workdir, ignore_errors=True)
    return events, notes


def analyse(
    group: Group,
    events: list[Event],
    phases: list[tuple[str, float, Event | None]],
    notes: list[str],
) -> None:
    """Slots moved, overlaps and flaps per event, from the complete log of the run."""
    intervals = group.intervals()
    by_slot: dict[int, list[Interval]] = {}
    for interval in intervals:
        by_slot.setdefault(interval.slot, []).append(interval)

    outside = 0
    fence_regressions = 0
    for slot_intervals in by_slot.values():
        for i, first in enumerate(slot_intervals):
            for second in slot_intervals[i + 1 :]:
                if second.start >= first.end:
                    break
                phase, owner = "before the first event", None
                for phase_name, t, phase_event in phases:
                    if t <= second.start:
                        phase, owner = phase_name, phase_event
                if owner is not None:
                    owner.overlaps += 1
                else:
                    outside += 1
                notes.append(
                    f"OVERLAP on slot {first.slot} during {phase}: pid {first.pid} "
                    f"[{first.start:.3f}, {first.end:.3f}] fence {first.fence} and pid "
                    f"{second.pid} [{second.start:.3f}, {second.end:.3f}] fence {second.fence}"
                )
        fences = [i.fence for i in slot_intervals if i.fence is not None]
        fence_regressions += sum(1 for x, y in itertools.pairwise(fences) if y <= x)
    if outside:
        notes.append(f"{outside} overlap(s) outside the measured events (restarts, shutdown)")
    if fence_regressions:
        notes.append(
            f"FENCING: {fence_regressions} token(s) did not increase from one iteration "
            "of a slot to the next"
        )

    for event in events:
        before = group.owners(event.t_event - 1e-6)
        after = group.owners(event.t_end, OWNER_WINDOW)
        event.moved = sum(1 for slot in range(WORKERS) if before.get(slot) != after.get(slot))
        for slot in range(WORKERS):
            sequence = [before.get(slot)]
            for e in group.starts(event.t_event, event.t_end):
                if e["slot"] == slot and e["pid"] != sequence[-1]:
                    sequence.append(e["pid"])
            flaps = sum(
                1
                for x, y, z in zip(sequence, sequence[1:], sequence[2:], strict=False)
                if x == z and x != y
            )
            if flaps:
                event.flaps += flaps
                event.details.append(f"FLAP on slot {slot}: owners in order {sequence}")


# -- report ----------------------------------------------------------------------------------

ROWS = [
    ("join", "process start included", 1.0, "<= 1 s", None, None),
    ("join", "after ready", None, "", 0.3, "<= 0.3 s"),
    ("TERM", "from signal", None, "", None, None),
    ("TERM", "after running iteration ends", 1.0, "<= 1 s", 0.1, "<= 0.1 s"),
    ("quiet", "from signal", None, "", None, None),
    ("quiet", "after running iteration ends", 1.0, "<= 1 s", 0.1, "<= 0.1 s"),
    ("SIGKILL", "from signal", 5.0, "<= 5 s", 3.0, "<= 3 s"),
    ("SIGKILL", "beyond process_expiry", None, "", 0.5, "<= 0.5 s"),
]


def fmt_seconds(values: list[float | None]) -> str:
    measured = [v for v in values if v is not None]
    if not measured:
        return "n/a"
    text = f"{statistics.median(measured):.3f} s ({max(measured):.3f})"
    if len(measured) < len(values):
        text += f" [{len(values) - len(measured)} missing]"
    return text


def fmt_range(values: list[int]) -> str:
    if not values:
        return "n/a"
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def report(all_events: list[list[Event]], repeat: int) -> None:
    header = (
        "event",
        "measured: median (max)",
        "goal",
        "excellent",
        "Ruby original*",
        "vs original",
        "verdict (max)",
        "slots moved",
        "min moves",
        "overlaps",
        "flaps",
    )
    lines = []
    shown_counts: set[str] = set()
    for name, label, goal, goal_text, excellent, excellent_text in ROWS:
        events = [e for run in all_events for e in run if e.name == name]
        values = [e.timings.get(label) for e in events]
        measured = [v for v in values if v is not None]
        worst = max(measured) if measured else None
        verdict = "n/a"
        if worst is not None and (goal is not None or excellent is not None):
            if excellent is not None and worst <= excellent:
                verdict = "excellent"
            elif goal is not None and worst <= goal:
                verdict = "goal met"
            else:
                verdict = "MISSED" if goal is not None else "not excellent"
        if len(events) < repeat:
            verdict += f" ({repeat - len(events)} run(s) missing)"
        ruby = RUBY[name] if label in ("process start included", "from signal") else ""
        versus = ""
        if ruby and measured:
            if name in RUBY_SECONDS:
                versus = f"{RUBY_SECONDS[name] / statistics.median(measured):.1f}x faster"
            else:
                versus = "never -> finite"
        counts: tuple[str, ...] = ("", "", "", "")
        if name not in shown_counts:
            shown_counts.add(name)
            counts = (
                fmt_range([e.moved for e in events if e.moved is not None]),
                fmt_range([e.min_moves for e in events]),
                str(sum(e.overlaps for e in events)),
                str(sum(e.flaps for e in events)),
            )
        lines.append(
            (
                f"{name}, {label}",
                fmt_seconds(values),
                goal_text,
                excellent_text or "",
                ruby,
                versus,
                verdict,
                *counts,
            )
        )
    widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(len(header))]
    rule = "-+-".join("-" * w for w in widths)
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print(rule)
    for row in lines:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print()
    print(
        "* Ruby original: the DESIGN's side-by-side measurement (6 workers, 2 processes, 0.1 s\n"
        "  iterations), quoted, not re-measured here: the Ruby gem cannot run on this machine.\n"
        "  measured = median over runs (max in parentheses); verdict uses the slowest run;\n"
        "  slots moved = slots whose owner differs before the event and after the observation\n"
        "  window, shown as min-max over runs; overlaps and flaps are totals over all runs.\n"
        "  SIGKILL beyond process_expiry = time from the kill minus process_expiry; it can be\n"
        "  negative because a membership expires process_expiry after the last heartbeat,\n"
        "  which came up to one heartbeat_interval before the kill."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument(
        "--backend",
        help="coordination backend URL of the processes, e.g. postgresql://...?schema=pbbench "
        "(default: the Redis of --redis-url); the iteration log stays in that Redis",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of every scenario")
    parser.add_argument(
        "--worker",
        choices=sorted(JOB_CLASSES),
        default="thread",
        help="the job's worker kind (default thread)",
    )
    parser.add_argument(
        "--observe",
        type=float,
        default=4.0,
        help="seconds each event is watched for flaps after it settled",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for any one step"
    )
    parser.add_argument(
        "--keep-logs", type=Path, help="copy every run's process logs into this directory"
    )
    args = parser.parse_args()
    if args.keep_logs is not None:
        args.keep_logs.mkdir(parents=True, exist_ok=True)

    # SIGTERM/SIGHUP to this script still kill the children, through atexit.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))

    client = redis.Redis.from_url(args.redis_url)
    client.ping()
    print(
        f"Slot handoff between real processes: job with {WORKERS} workers, iterations of "
        f"{RECORDS} records x {RECORD_TIME} s, 2 processes, worker: {args.worker}, backend "
        f"{redact_url(args.backend or args.redis_url)}"
    )
    print(
        f"Default settings (nothing set in the config): heartbeat_interval "
        f"{defaults.HEARTBEAT_INTERVAL:g} s, process_expiry {defaults.PROCESS_EXPIRY:g} s, "
        f"runtime_lock_timeout {defaults.RUNTIME_LOCK_TIMEOUT:g} s, max_threads "
        f"{defaults.MAX_THREADS}"
    )
    print(f"{args.repeat} run(s), each in a fresh namespace; {args.observe:g} s watched per event")
    print()
    all_events: list[list[Event]] = []
    try:
        for run in range(1, args.repeat + 1):
            events, notes = run_once(client, args.redis_url, args, args.keep_logs)
            all_events.append(events)
            print(f"run {run}:")
            for event in events:
                timings = ", ".join(
                    f"{label} {value:.3f} s" if value is not None else f"{label} n/a"
                    for label, value in event.timings.items()
                )
                print(
                    f"  {event.name:<7} {timings}; moved {event.moved} (min {event.min_moves}), "
                    f"overlaps {event.overlaps}, flaps {event.flaps}"
                )
                for detail in event.details:
                    print(f"          {detail}")
            for note in notes:
                print(f"  {note}")
            sys.stdout.flush()
    finally:
        _kill_children()
        client.close()
    print()
    report(all_events, args.repeat)


if __name__ == "__main__":
    main()
