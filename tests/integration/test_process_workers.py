"""The ``process`` worker kind under real ``process-balancer run`` processes against real
Redis: the iteration protocol in a child process, a stop, a child that never returns from
its record (killed so the slot moves within the lease bound), a child killed from outside
(a failure with backoff, in status) and ``max_iteration_time`` for both kinds."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.cli import free_port, status_json
from support.harness import IterationLog, wait_until
from support.record_log import overlaps, read_records, token_regressions

pytestmark = pytest.mark.backends("redis")

JOB = {
    "class": "support.jobs:ChildRecordingJob",
    "worker": "process",
    "records": 3,
    "record_time": 0.02,
}


def events(log: IterationLog, kind: str, pid: int | None = None) -> list[dict[str, Any]]:
    return [e for e in log.events() if e["ev"] == kind and (pid is None or e["pid"] == pid)]


def slot_status(backend_url: str, namespace: str, job: str = "q") -> dict[str, Any] | None:
    status = status_json("--backend", backend_url, "--namespace", namespace)
    for process in status["processes"]:
        for slot in process["slots"]:
            if slot["job"] == job and slot["index"] == 0:
                return dict(slot)
    return None


def test_iterations_run_in_a_child_in_contract_order_and_term_exits_zero(
    group_config, spawn, iteration_log
) -> None:
    a = spawn(group_config({"q": {**JOB, "workers": 2}}), "a")
    wait_until(lambda: len(events(iteration_log, "end")) >= 8, 20, message="eight iterations")
    a.send(signal.SIGTERM)
    assert a.wait(20) == 0
    assert "left the group" in a.log()
    for slot in (0, 1):
        seen = [e for e in iteration_log.events() if e["slot"] == slot]
        assert [e["ev"] for e in seen] == ["start", "end"] * (len(seen) // 2)
        assert {e["pid"] for e in seen} == {a.pid}
        (child,) = {e["child"] for e in seen}
        assert child != a.pid
        assert all(e["done"] == 3 for e in seen[1::2][:-1])
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)


def test_a_job_exception_runs_unlock_records_and_backs_off(
    group_config, spawn, iteration_log
) -> None:
    config = group_config({"bad": {**JOB, "class": "support.jobs:ChildFailingJob", "workers": 1}})
    a = spawn(config, "a")
    wait_until(lambda: len(events(iteration_log, "end")) >= 2, 20, message="two failures")
    ends = [e["t"] for e in events(iteration_log, "end")]
    assert ends[1] - ends[0] >= 0.8, "restarted without its backoff"
    assert "RuntimeError: boom from ChildFailingJob" in a.log()
    assert a.popen.poll() is None


def test_a_record_that_never_returns_is_killed_and_the_slot_moves_without_overlap(
    group_config, spawn, iteration_log
) -> None:
    """Given a slot whose child hangs in its record, when its process goes quiet, then the
    child is killed one lock TTL later and the peer runs the slot, never both at once."""
    config = group_config(
        {"q": {**JOB, "workers": 1, "records": 1, "record_time": 1000, "runtime_lock_timeout": 1.5}}
    )
    a = spawn(config, "a")
    (first,) = wait_until(lambda: events(iteration_log, "start"), 20, message="a running")
    b = spawn(config, "b")
    time.sleep(1.0)
    quieted = time.time()
    a.send(signal.SIGUSR1)
    taken = wait_until(lambda: events(iteration_log, "start", b.pid), 15, message="b runs it")
    assert taken[0]["t"] - quieted < 1.5 + 2.0
    wait_until(lambda: "killed child process" in a.log(), 5, message="the kill in a's log")
    with pytest.raises(ProcessLookupError):
        os.kill(first["child"], 0)
    assert taken[0]["fence"] > first["fence"]


def test_a_child_killed_from_outside_is_a_failure_with_backoff_in_status(
    group_config, spawn, iteration_log, backend_url, namespace
) -> None:
    a = spawn(group_config({"q": {**JOB, "workers": 1, "record_time": 0.2}}), "a")
    (first,) = wait_until(lambda: events(iteration_log, "start")[:1], 20, message="a running")
    os.kill(first["child"], signal.SIGKILL)
    slot = wait_until(
        lambda: (s := slot_status(backend_url, namespace)) and s["restarts"] >= 1 and s,
        10,
        0.2,
        message="the failure in status",
    )
    assert "WorkerProcessDied" in slot["last_error"] and "SIGKILL" in slot["last_error"]
    again = wait_until(
        lambda: [e for e in events(iteration_log, "start") if e["child"] != first["child"]],
        15,
        message="a new child runs the slot",
    )
    assert again[0]["pid"] == a.pid


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def test_max_iteration_time_is_reported_for_threads_and_enforced_for_processes(
    group_config, spawn, iteration_log, backend_url, namespace
) -> None:
    port = free_port()
    config = group_config(
        {
            "t": {
                "class": "support.jobs:RecordingJob",
                "workers": 1,
                "records": 1,
                "record_time": 4,
                "max_iteration_time": 0.5,
            },
            "p": {**JOB, "workers": 1, "records": 1, "record_time": 1000, "max_iteration_time": 1},
        },
        metrics_port=port,
    )
    a = spawn(config, "a")
    thread = wait_until(
        lambda: (s := slot_status(backend_url, namespace, "t")) and s["stuck"] and s,
        10,
        0.2,
        message="the thread slot overdue",
    )
    assert thread["max_iteration_time"] == 0.5
    samples = wait_until(
        lambda: (m := scrape(port)) and m.get("process_balancer_slots_overdue[('job', 't')]") and m,
        10,
        0.2,
        message="the overdue gauge",
    )
    assert samples["process_balancer_slots_overdue[('job', 't')]"] == 1
    proc = wait_until(
        lambda: (s := slot_status(backend_url, namespace, "p")) and s["restarts"] >= 1 and s,
        10,
        0.2,
        message="the process slot killed",
    )
    assert "max_iteration_time" in proc["last_error"]
    assert proc["overruns"] >= 1 or proc["state"] == "backoff"
    wait_until(
        lambda: len([e for e in events(iteration_log, "start") if e["job"] == "p"]) >= 2,
        15,
        message="the process slot runs again after its backoff",
    )
    samples = wait_until(
        lambda: (
            (m := scrape(port))
            and m.get("process_balancer_iteration_overruns_total[('job', 'p')]")
            and m
        ),
        10,
        0.2,
        message="the overrun counter",
    )
    assert "killed child process" in a.log()


def test_no_record_runs_twice_at_once_as_processes_join_leave_and_die(
    group_config, spawn, iteration_log, tmp_path: Path
) -> None:
    record_log = tmp_path / "records.jsonl"
    job = {**JOB, "class": "support.record_log:RecordLoggingJob", "record_log": str(record_log)}
    config = group_config({"q": {**job, "workers": 4, "records": 5}})
    a = spawn(config, "a")
    wait_until(lambda: len(read_records(record_log)) > 20, 20, message="a running")
    b = spawn(config, "b")
    time.sleep(3)
    a.send(signal.SIGUSR1)
    time.sleep(2)
    c = spawn(config, "c")
    time.sleep(2)
    b.kill()
    killed_at = time.time()
    # b's slots move to c once b's membership expires (3 s) plus the grace, and c starts a
    # child per slot: wait for every slot to run again rather than for a fixed time.
    wait_until(
        lambda: (
            {r.slot for r in read_records(record_log) if r.start >= killed_at + 4.0} == {0, 1, 2, 3}
        ),
        30,
        0.2,
        message="every slot running again on c",
    )
    records = read_records(record_log)
    assert len(records) > 200
    found = overlaps(records)
    assert not found, f"{len(found)} overlapping records, first: {found[0]}"
    assert not token_regressions(records)
    for proc in (a, c):
        proc.send(signal.SIGTERM)
        assert proc.wait(20) == 0
