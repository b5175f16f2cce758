"""Autoscaling with real ``process-balancer run`` processes on Redis: the count follows a
fake queue depth the test writes, one process evaluates at a time, a peer takes evaluation
over when that process is killed, and an operator's pause wins."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import process_balancer
from process_balancer.client.api import Client
from support.harness import IterationLog, Process, running_by_pid, wait_until

pytestmark = pytest.mark.backends("redis")

INTERVAL = 0.3
#: An evaluation and the heartbeats that spread a new count: well within this.
FOLLOWS_WITHIN = 10.0


@pytest.fixture
def client(backend_url: str, namespace: str) -> Client:
    return process_balancer.configure(backend=backend_url, namespace=namespace)


@pytest.fixture
def depth(tmp_path: Path) -> Callable[[int], None]:
    """Set the fake queue's depth (what desired_workers() returns)."""

    def write(value: int) -> None:
        tmp = tmp_path / "depth.tmp"
        tmp.write_text(str(value))
        tmp.replace(tmp_path / "depth")

    write(1)
    return write


@pytest.fixture
def config(group_config: Callable[..., Path], tmp_path: Path) -> Path:
    job = {
        "class": "support.autoscale_jobs:QueueDepthJob",
        "workers": 1,
        "records": 2,
        "record_time": 0.02,
        "depth_file": str(tmp_path / "depth"),
        "calls_file": str(tmp_path / "calls.jsonl"),
        "autoscale": {"min": 1, "max": 4, "interval": INTERVAL, "cooldown": 0},
    }
    return group_config({"q": job})


def calls(tmp_path: Path, since: float = 0.0) -> list[dict[str, Any]]:
    """Every desired_workers() call after ``since``: pid and time."""
    path = tmp_path / "calls.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [c for c in (json.loads(line) for line in lines if line) if c["t"] >= since]


def scheduled(client: Client, count: int) -> Callable[[], bool]:
    return lambda: client.scheduled_workers("q") == count


def autoscale_status(client: Client) -> dict[str, Any]:
    status: dict[str, Any] = client.status()["jobs"]["q"]["autoscale"]
    return status


def changes(proc: Process) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in re.findall(r"autoscale: job q (\d+) -> (\d+)", proc.log())]


def test_the_count_follows_the_queue_depth_clamped_to_min_and_max(
    config: Path,
    spawn: Callable[..., Process],
    client: Client,
    depth: Callable[[int], None],
    iteration_log: IterationLog,
) -> None:
    proc = spawn(config)
    depth(3)
    wait_until(scheduled(client, 3), FOLLOWS_WITHIN, message="3 workers for a depth of 3")
    wait_until(
        lambda: running_by_pid(iteration_log, time.time() - 0.6).get(proc.pid) == {0, 1, 2},
        FOLLOWS_WITHIN,
        message="the 3 slots running",
    )
    depth(50)
    wait_until(scheduled(client, 4), FOLLOWS_WITHIN, message="clamped to max 4")
    depth(0)
    wait_until(scheduled(client, 1), FOLLOWS_WITHIN, message="clamped to min 1")
    wait_until(lambda: changes(proc) == [(1, 3), (3, 4), (4, 1)], 5, message="changes logged")
    assert "autoscale: job q 3 -> 4 (desired_workers() returned 50, clamped to [1, 4])" in (
        proc.log()
    )
    # The decision reaches the status with the process's next heartbeat.
    status = wait_until(
        lambda: (s := autoscale_status(client))["last_change"]["to"] == 1 and s,
        5,
        message="the last change in the status",
    )
    assert status["state"] == "evaluating" and status["evaluator"] == status["last"]["by"]
    assert str(proc.pid) in status["evaluator"].split(":")
    assert status["last_change"]["from"] == 4


def test_one_process_evaluates_at_a_time_and_a_peer_takes_over_when_it_is_killed(
    config: Path,
    spawn: Callable[..., Process],
    client: Client,
    depth: Callable[[int], None],
    tmp_path: Path,
) -> None:
    a = spawn(config, "a")
    b = spawn(config, "b")
    wait_until(lambda: len({p.identity for p in client.processes()}) == 2, 15, message="2 joined")
    depth(2)
    wait_until(scheduled(client, 2), FOLLOWS_WITHIN, message="2 workers")
    time.sleep(10 * INTERVAL)  # both processes could evaluate all along
    evaluators = {c["pid"] for c in calls(tmp_path)}
    assert len(evaluators) == 1, f"desired_workers() called by {evaluators}"
    first = a if evaluators == {a.pid} else b
    other = b if first is a else a
    assert "evaluates job q" in first.log() and "evaluates job q" not in other.log()
    assert autoscale_status(client)["evaluator"].split(":")[1] == str(first.pid)

    first.kill()
    killed_at = time.time()
    # Its membership expires (3 s), the lock is free takeover_grace (1 s) after that and the
    # peer asks for it every interval.
    wait_until(
        lambda: any(c["pid"] == other.pid for c in calls(tmp_path, killed_at)),
        15,
        message="the peer evaluating",
    )
    depth(4)
    wait_until(scheduled(client, 4), FOLLOWS_WITHIN, message="4 workers set by the peer")
    assert {c["pid"] for c in calls(tmp_path, killed_at)} == {other.pid}
    # The change is logged just after it is written: the count may be seen first.
    wait_until(lambda: (2, 4) in changes(other), 5, message="the peer's change in its log")
    status = wait_until(
        lambda: (s := autoscale_status(client))["last_change"] and s,
        5,
        message="the peer's change in the status",
    )
    assert status["evaluator"].split(":")[1] == str(other.pid)
    assert status["last_change"]["by"] == status["evaluator"]
    assert (status["last_change"]["from"], status["last_change"]["to"]) == (2, 4)
    other.send(signal.SIGTERM)
    assert other.wait(20) == 0


def test_pause_stops_autoscaling_until_resume(
    config: Path,
    spawn: Callable[..., Process],
    client: Client,
    depth: Callable[[int], None],
    iteration_log: IterationLog,
) -> None:
    proc = spawn(config)
    depth(2)
    wait_until(scheduled(client, 2), FOLLOWS_WITHIN, message="2 workers")
    assert client.pause("q") == 2
    depth(4)
    paused_at = time.time()
    wait_until(
        lambda: (
            autoscale_status(client)["state"] == "paused"
            and autoscale_status(client)["last"]["action"] == "paused"
            and autoscale_status(client)["last"]["at"] > paused_at
        ),
        FOLLOWS_WITHIN,
        message="the autoscaler seeing the pause",
    )
    time.sleep(10 * INTERVAL)
    assert client.scheduled_workers("q") == 0
    assert client.backend.paused_counts() == {"q": 2}
    assert not running_by_pid(iteration_log, time.time() - 0.6)
    assert "autoscale: job q is paused; not scaling it until it is resumed" in proc.log()

    assert client.resume("q") == 2
    wait_until(scheduled(client, 4), FOLLOWS_WITHIN, message="autoscaled again after resume")
    wait_until(lambda: changes(proc) == [(1, 2), (2, 4)], 5, message="changes logged")
