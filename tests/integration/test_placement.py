"""Placement with real ``process-balancer run`` processes on Redis: tags, required tags nobody
has, and the capacity-bound case the proportional rule alone left unplaced."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support.cli import pb, status_json
from support.harness import IterationLog, Process, settled, wait_until

pytestmark = pytest.mark.backends("redis")

JOB = {"class": "support.jobs:RecordingJob", "records": 2, "record_time": 0.025}


def test_a_job_requiring_a_tag_runs_only_on_processes_with_it(
    group_config: Callable[..., Path],
    spawn: Callable[..., Process],
    iteration_log: IterationLog,
    backend_url: str,
    namespace: str,
) -> None:
    """Given one process started with --tag gpu and one without, the gpu job runs only on the
    tagged one while the other job is spread over both; status shows the tags."""
    config = group_config(
        {
            "train": {**JOB, "workers": 3, "placement": {"require": ["gpu"]}},
            "q": {**JOB, "workers": 4},
        }
    )
    gpu = spawn(config, "gpu", "--tag", "gpu")
    cpu = spawn(config, "cpu")
    wait_until(settled(iteration_log, {gpu.pid: 2, cpu.pid: 2}), 20, message="q split 2/2")
    wait_until(settled(iteration_log, {gpu.pid: 3}, job="train"), 20, message="train on gpu only")
    time.sleep(1.0)
    assert settled(iteration_log, {gpu.pid: 3}, window=1.0, job="train")()

    status = status_json("--backend", backend_url, "--namespace", namespace)
    tags = {p["pid"]: p["tags"] for p in status["processes"]}
    assert tags == {gpu.pid: ["gpu"], cpu.pid: []}
    assert status["jobs"]["train"]["require_tags"] == ["gpu"]
    assert status["jobs"]["train"]["unplaced"] == []


def test_a_required_tag_nobody_has_is_reported_unplaced_with_the_reason(
    group_config: Callable[..., Path],
    spawn: Callable[..., Process],
    iteration_log: IterationLog,
    backend_url: str,
    namespace: str,
) -> None:
    config = group_config(
        {
            "infer": {**JOB, "workers": 2, "placement": {"require": ["tpu"]}},
            "q": {**JOB, "workers": 2},
        }
    )
    a = spawn(config, "a", "--tag", "gpu")
    wait_until(settled(iteration_log, {a.pid: 2}), 20, message="q runs")

    def reported() -> bool:
        job = status_json("--backend", backend_url, "--namespace", namespace)["jobs"]["infer"]
        return job["unplaced"] == [0, 1] and (job["unplaced_reason"] or {}).get("code") == "no_tags"

    wait_until(reported, 20, message="infer unplaced for want of tag tpu")
    table = pb("status", "--backend", backend_url, "--namespace", namespace)
    assert table.returncode == 0, table.stderr
    assert "no live process has tag tpu" in " ".join(table.stdout.split())
    assert "infer" not in {event["job"] for event in iteration_log.events()}
    assert "cannot be placed: no live process has tag tpu" in a.log()


def test_slots_are_placed_when_capacity_binds_and_job_sets_differ(
    group_config: Callable[..., Path],
    spawn: Callable[..., Process],
    iteration_log: IterationLog,
    backend_url: str,
    namespace: str,
) -> None:
    """Given A (2 threads) running jobs a and b and B (2 threads) running only a, all four
    slots run: a on B and b on A. Spreading a over both first, as before, left one slot of b
    unplaced while B had a thread free for nothing it could run."""
    both = group_config({"a": {**JOB, "workers": 2}, "b": {**JOB, "workers": 2}}, max_threads=2)
    only_a = group_config({"a": {**JOB, "workers": 2}}, name="only_a.yml", max_threads=2)
    first = spawn(both, "A")
    wait_until(settled(iteration_log, {first.pid: 2}, job="a"), 20, message="A runs a")
    second = spawn(only_a, "B")
    wait_until(settled(iteration_log, {second.pid: 2}, job="a"), 20, message="a moves to B")
    wait_until(settled(iteration_log, {first.pid: 2}, job="b"), 20, message="A runs b")
    status = status_json("--backend", backend_url, "--namespace", namespace)
    assert {job_id: job["unplaced"] for job_id, job in status["jobs"].items()} == {
        "a": [],
        "b": [],
    }
    assert iteration_log.overlaps() == []
