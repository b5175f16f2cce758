"""Real ``process-balancer run`` processes and the iteration log they write, for tests."""

from __future__ import annotations

import bisect
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TESTS_DIR = Path(__file__).resolve().parent.parent


def wait_until(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.05, message: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def write_config(
    path: Path, *, backend: str, namespace: str, jobs: dict[str, dict[str, Any]], **settings: Any
) -> Path:
    config = {"global": {"backend": backend, "namespace": namespace, **settings}, "jobs": jobs}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Process:
    """One ``process-balancer run`` child process with its log file."""

    def __init__(
        self,
        config: Path,
        log_dir: Path,
        name: str,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        env = {**os.environ, **(env or {})}
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
        env["PYTHONUNBUFFERED"] = "1"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "process_balancer", "run", "-c", str(config), *extra_args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(TESTS_DIR),
        )
        self.pid = self.popen.pid
        self.died_at: float | None = None

    def log(self) -> str:
        return self.log_path.read_text()

    def send(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def kill(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)
        self.died_at = time.time()

    def wait(self, timeout: float) -> int:
        code = self.popen.wait(timeout)
        self.died_at = self.died_at or time.time()
        return code

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)
        self._log.close()


@dataclass
class Interval:
    job: str
    slot: int
    pid: int
    start: float
    end: float
    fence: int | None
    closed: bool
    done: int | None = None
    it: str = ""
    #: False when the job's fenced store refused the claim this iteration started with.
    claim_ok: bool = True


@dataclass
class IterationLog:
    """The per-iteration events the test jobs append to one file."""

    path: Path
    dead: dict[int, float] = field(default_factory=dict)
    _parsed: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _offset: int = field(default=0, repr=False)

    def events(self) -> list[dict[str, Any]]:
        """Every complete line so far; lines already parsed are not parsed again (fault
        scenarios log every fenced write and poll the log many times a second)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        # The last line may be mid-write; only complete lines count.
        complete = data[: data.rfind(b"\n") + 1]
        if complete:
            self._parsed.extend(json.loads(line) for line in complete.splitlines())
            self._offset += len(complete)
        return list(self._parsed)

    def intervals(self) -> list[Interval]:
        opened: dict[str, dict[str, Any]] = {}
        result = []
        for event in self.events():
            if event["ev"] == "start":
                opened[event["it"]] = event
            elif event["ev"] == "end":
                start = opened.pop(event["it"], None)
                if start is not None:
                    result.append(
                        Interval(
                            start["job"],
                            start["slot"],
                            start["pid"],
                            start["t"],
                            event["t"],
                            start["fence"],
                            True,
                            event.get("done"),
                            start["it"],
                            start.get("claim_ok", True),
                        )
                    )
        for start in opened.values():
            end = self.dead.get(start["pid"], float("inf"))
            result.append(
                Interval(
                    start["job"],
                    start["slot"],
                    start["pid"],
                    start["t"],
                    end,
                    start["fence"],
                    False,
                    None,
                    start["it"],
                    start.get("claim_ok", True),
                )
            )
        return sorted(result, key=lambda i: (i.job, i.slot, i.start))

    def overlaps(self) -> list[tuple[Interval, Interval]]:
        """Pairs of iterations of one slot (on any processes) that overlap in time."""
        found = []
        by_slot: dict[tuple[str, int], list[Interval]] = {}
        for interval in self.intervals():
            by_slot.setdefault((interval.job, interval.slot), []).append(interval)
        for intervals in by_slot.values():
            for i, first in enumerate(intervals):
                for second in intervals[i + 1 :]:
                    if second.start >= first.end:
                        break
                    found.append((first, second))
        return found

    def writes(self) -> list[dict[str, Any]]:
        """The fenced writes of jobs that log them (``FencedJob``), in log order."""
        return [e for e in self.events() if e["ev"] == "w"]

    def refused_writes(self) -> int:
        """Claims and writes the fenced store refused because they carried a stale token."""
        refused = sum(1 for e in self.writes() if not e["ok"])
        refused += sum(1 for i in self.intervals() if not i.claim_ok)
        return refused

    def unfenced_overlaps(self) -> list[tuple[Interval, Interval]]:
        """Overlapping iterations of one slot whose writes both landed, interleaved.

        The fenced store numbers every operation on a slot (``seq``). Two iterations that
        overlapped in time did no harm when every write of one landed before every write of
        the other (the older holder's later writes were refused): the store saw one owner at
        a time. They did harm when their landed writes interleave.
        """
        landed: dict[str, list[int]] = {}
        for write in self.writes():
            if write["ok"]:
                landed.setdefault(write["it"], []).append(write["seq"])
        harmful = []
        for first, second in self.overlaps():
            a, b = landed.get(first.it), landed.get(second.it)
            if a and b and min(a) < max(b) and min(b) < max(a):
                harmful.append((first, second))
        return harmful

    def token_regressions(self) -> list[tuple[Interval, Interval]]:
        """(earlier, later) iterations of one slot where the later-starting one holds a
        fencing token lower than or equal to one handed out before it."""
        found = []
        by_slot: dict[tuple[str, int], list[Interval]] = {}
        for interval in self.intervals():
            if interval.fence is not None:
                by_slot.setdefault((interval.job, interval.slot), []).append(interval)
        for intervals in by_slot.values():
            highest: Interval | None = None
            for interval in intervals:  # sorted by start
                assert interval.fence is not None
                if highest is not None and interval.fence <= (highest.fence or 0):
                    found.append((highest, interval))
                    continue
                highest = interval
        return found

    def working_starts(
        self, since: float, job: str, exclude: frozenset[int] = frozenset()
    ) -> list[dict[str, Any]]:
        """Starts at or after ``since`` whose claim the fenced store accepted (the iteration
        could do work), by processes not in ``exclude``, in time order."""
        return sorted(
            (
                e
                for e in self.events()
                if e["ev"] == "start"
                and e["job"] == job
                and e["t"] >= since
                and e.get("claim_ok", True)
                and e["pid"] not in exclude
            ),
            key=lambda e: e["t"],
        )

    def whole_again(
        self,
        since: float,
        slots: int,
        job: str = "q",
        exclude: frozenset[int] = frozenset(),
    ) -> float | None:
        """Seconds from ``since`` until every one of ``slots`` slots had started a working
        iteration (on a process not in ``exclude``); None if some slot has not yet."""
        first: dict[int, float] = {}
        for event in self.working_starts(since, job, exclude):
            first.setdefault(event["slot"], event["t"])
        if len(first) < slots:
            return None
        return max(first.values()) - since

    def balanced_again(
        self, since: float, slots: int, pids: set[int], job: str = "q", window: float = 0.6
    ) -> float | None:
        """Seconds from ``since`` until, within one ``window``, every slot ran a working
        iteration and each of ``pids`` ran its share (at least ``slots // len(pids)``
        slots) and nobody else ran any; None if that has not happened yet."""
        share = slots // max(1, len(pids))
        starts = self.working_starts(since, job)
        left = 0
        for i, event in enumerate(starts):
            while starts[left]["t"] < event["t"] - window:
                left += 1
            by_pid: dict[int, set[int]] = {}
            for e in starts[left : i + 1]:
                by_pid.setdefault(e["pid"], set()).add(e["slot"])
            running = set().union(*by_pid.values())
            if (
                len(running) == slots
                and set(by_pid) == pids
                and all(len(s) >= share for s in by_pid.values())
            ):
                return event["t"] - since
        return None

    def recovered_after(
        self,
        since: float,
        until: float,
        slots: int,
        pids: set[int],
        job: str = "q",
        window: float = 0.6,
        step: float = 0.05,
    ) -> float | None:
        """Seconds from ``since`` after which the group stayed whole and balanced until
        ``until``: at every moment, the last ``window`` seconds saw every slot run a working
        iteration and each of ``pids`` (and nobody else) run its share. None if it was not
        so at ``until``. Unlike ``balanced_again``, a disruption that shows only later (a
        process noticing at its next heartbeat that its membership lapsed) counts."""
        share = slots // max(1, len(pids))
        starts = self.working_starts(since - window, job)
        times = [e["t"] for e in starts]

        def balanced(at: float) -> bool:
            by_pid: dict[int, set[int]] = {}
            first, last = bisect.bisect_left(times, at - window), bisect.bisect_right(times, at)
            for e in starts[first:last]:
                by_pid.setdefault(e["pid"], set()).add(e["slot"])
            running = set().union(*by_pid.values())
            return (
                len(running) == slots
                and set(by_pid) == pids
                and all(len(s) >= share for s in by_pid.values())
            )

        if not balanced(until):
            return None
        last_bad = None
        at = since
        while at < until:
            if not balanced(at):
                last_bad = at
            at += step
        return 0.0 if last_bad is None else last_bad + step - since

    def slots_run_by(self, since: float) -> dict[tuple[str, int], set[int]]:
        """(job, slot) -> pids that started an iteration of it after ``since``."""
        result: dict[tuple[str, int], set[int]] = {}
        for event in self.events():
            if event["ev"] == "start" and event["t"] >= since:
                result.setdefault((event["job"], event["slot"]), set()).add(event["pid"])
        return result


def running_by_pid(log: IterationLog, since: float, job: str = "q") -> dict[int, set[int]]:
    """pid -> slots of ``job`` it started an iteration of after ``since``."""
    result: dict[int, set[int]] = {}
    for (job_id, slot), pids in log.slots_run_by(since).items():
        if job_id == job:
            for pid in pids:
                result.setdefault(pid, set()).add(slot)
    return result


def settled(
    log: IterationLog, expected: dict[int, int], window: float = 0.6, job: str = "q"
) -> Callable[[], bool]:
    """A predicate: True once, in the last ``window`` seconds, each pid ran exactly its
    expected number of slots of ``job`` and nobody else ran any."""

    def check() -> bool:
        recent = running_by_pid(log, time.time() - window, job)
        return {pid: len(slots) for pid, slots in recent.items()} == expected

    return check
