"""Real ``process-balancer run`` processes and the iteration log they write, for tests."""

from __future__ import annotations

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
        self, config: Path, log_dir: Path, name: str, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        env = dict(os.environ)
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


@dataclass
class IterationLog:
    """The per-iteration events the test jobs append to one file."""

    path: Path
    dead: dict[int, float] = field(default_factory=dict)

    def events(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        # The last line may be mid-write; only complete lines count.
        return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]

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
