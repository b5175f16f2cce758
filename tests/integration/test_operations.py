"""The operator commands (status, scale, pause, resume, quiet, stop, dump) driven through the
real CLI against real ``process-balancer run`` processes on Redis."""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from support.cli import pb, status_json
from support.harness import IterationLog, Process, settled, wait_until

JOB = {"class": "support.jobs:RecordingJob", "records": 4, "record_time": 0.025}

LIVE_SLOTS = "until the status shows every slot running"


def running(config: Path, job: str = "q") -> int:
    return int(status_json("-c", str(config))["jobs"].get(job, {}).get("running", -1))


def identity_of(config: Path, proc: Process) -> str:
    def find() -> str | None:
        for entry in status_json("-c", str(config))["processes"]:
            if entry["pid"] == proc.pid:
                return str(entry["identity"])
        return None

    found: str = wait_until(find, 15, message=f"{proc.name} in the status")
    return found


def acked_lines(stdout: str) -> dict[str, str]:
    """identity -> what the CLI says about it."""
    result = {}
    for line in stdout.splitlines():
        identity, _, outcome = line.partition("  ")
        result[identity.strip()] = outcome.strip()
    return result


@pytest.fixture
def two(group_config, spawn, iteration_log: IterationLog) -> tuple[Path, Process, Process]:
    """Two processes sharing job q's 4 slots 2/2."""
    config = group_config({"q": {**JOB, "workers": 4}})
    a = spawn(config, "a")
    b = spawn(config, "b")
    wait_until(settled(iteration_log, {a.pid: 2, b.pid: 2}), 15, message="a 2/2 split")
    wait_until(lambda: running(config) == 4, 10, message=LIVE_SLOTS)
    return config, a, b


# -- status --------------------------------------------------------------------------------------


def test_status_json_lists_both_processes_their_slots_and_the_job(two, namespace) -> None:
    config, a, b = two
    status = status_json("-c", str(config))
    assert status["schema"] == 1
    assert status["namespace"] == namespace
    processes = {p["pid"]: p for p in status["processes"]}
    assert set(processes) == {a.pid, b.pid}
    for proc in processes.values():
        assert proc["hostname"] == socket.gethostname()
        assert proc["state"] == "active" and proc["capacity"] == 10
        assert len(proc["running"]["q"]) == 2
        assert proc["heartbeat_age"] < 3
        live = {s["index"] for s in proc["slots"] if s["state"] == "running"}
        assert live == set(proc["running"]["q"])
        assert all(s["restarts"] == 0 and s["last_error"] is None for s in proc["slots"])
    indexes = sorted(i for p in processes.values() for i in p["running"]["q"])
    assert indexes == [0, 1, 2, 3]
    job = status["jobs"]["q"]
    assert (job["scheduled"], job["running"], job["unplaced"], job["stuck"]) == (4, 4, [], [])
    assert job["processes"] == 2


def test_status_table_shows_processes_slots_and_jobs(two) -> None:
    config, a, b = two
    result = pb("status", "-c", str(config))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for title in ("Processes", "Slots", "Jobs"):
        assert title in out
    assert str(a.pid) in out and str(b.pid) in out
    assert re.search(r"^\s+q\s+4 \(config\)\s+4\s", out, re.MULTILINE), out
    assert "2 processes (2 active)" in out
    for proc in (a, b):
        assert re.search(rf"\s{proc.pid}\s.*\sactive\s+2/10\s+q: ", out), out


def test_status_counts_scheduled_against_running_and_reports_stuck_iterations(
    group_config, spawn, iteration_log
) -> None:
    config = group_config(
        {"q": {**JOB, "workers": 2, "records": 100, "record_time": 30}}, max_threads=1
    )
    spawn(config, "a")

    def stuck() -> dict[str, Any] | None:
        job = status_json("-c", str(config), "--stuck-after", "0.5")["jobs"]["q"]
        return job if job["stuck"] else None

    job = wait_until(stuck, 15, 0.2, message="a stuck slot")
    assert (job["scheduled"], job["running"], job["unplaced"]) == (2, 1, [1])
    assert job["stuck"][0]["index"] == 0 and job["stuck"][0]["iteration_age"] > 0.5
    table = pb("status", "-c", str(config), "--stuck-after", "0.5").stdout
    assert "STUCK" in table


# -- scale, pause, resume ------------------------------------------------------------------------


def test_scale_to_n_and_by_k_prints_the_new_count(group_config, spawn, iteration_log) -> None:
    config = group_config({"q": {**JOB, "workers": 2}})
    a = spawn(config, "a")
    wait_until(settled(iteration_log, {a.pid: 2}), 15, message="2 slots")

    result = pb("scale", "q", "5", "-c", str(config))
    assert (result.returncode, result.stdout) == (0, "q: 5 workers (was 2)\n")
    wait_until(settled(iteration_log, {a.pid: 5}), 10, message="5 slots")

    result = pb("scale", "q", "--by", "-2", "-c", str(config))
    assert (result.returncode, result.stdout) == (0, "q: 3 workers (was 5)\n")
    wait_until(settled(iteration_log, {a.pid: 3}), 10, message="3 slots")


def test_scale_refuses_negative_results_and_unknown_jobs(group_config, spawn, namespace) -> None:
    config = group_config({"q": {**JOB, "workers": 2}})
    spawn(config, "a")
    wait_until(lambda: running(config) == 2, 15, message="2 running")

    negative = pb("scale", "q", "--by", "-3", "-c", str(config))
    assert negative.returncode == 2
    assert "cannot go below 0" in negative.stderr
    assert status_json("-c", str(config))["jobs"]["q"]["scheduled"] == 2

    unknown = pb("scale", "qq", "4", "-c", str(config))
    assert unknown.returncode == 2
    assert "unknown job 'qq'" in unknown.stderr and "did you mean 'q'?" in unknown.stderr

    forced = pb("scale", "qq", "4", "--force", "-c", str(config))
    assert (forced.returncode, forced.stdout) == (0, "qq: 4 workers (was 1)\n")
    assert status_json("-c", str(config))["jobs"]["qq"]["unplaced"] == [0, 1, 2, 3]


def test_a_job_a_live_process_advertises_is_known_without_a_config(
    group_config, spawn, backend_url, namespace
) -> None:
    config = group_config({"q": {**JOB, "workers": 1}})
    spawn(config, "a")
    wait_until(lambda: running(config) == 1, 15, message="1 running")
    result = pb("scale", "q", "--by", "1", "--backend", backend_url, "--namespace", namespace)
    assert (result.returncode, result.stdout) == (0, "q: 2 workers (was 1)\n")


def test_pause_stops_every_worker_and_resume_restores_the_count(
    group_config, spawn, iteration_log
) -> None:
    config = group_config({"q": {**JOB, "workers": 3}})
    a = spawn(config, "a")
    wait_until(settled(iteration_log, {a.pid: 3}), 15, message="3 slots")

    paused = pb("pause", "q", "-c", str(config))
    assert (paused.returncode, paused.stdout) == (0, "q: paused, 0 workers (resume restores 3)\n")
    wait_until(lambda: running(config) == 0, 10, message="no worker running")
    job = status_json("-c", str(config))["jobs"]["q"]
    assert (job["paused"], job["resume_to"], job["scheduled"]) == (True, 3, 0)

    again = pb("pause", "q", "-c", str(config))
    assert again.returncode == 1
    assert "paused already" in again.stderr

    resumed = pb("resume", "q", "-c", str(config))
    assert (resumed.returncode, resumed.stdout) == (0, "q: resumed, 3 workers\n")
    wait_until(settled(iteration_log, {a.pid: 3}), 10, message="3 slots again")

    not_paused = pb("resume", "q", "-c", str(config))
    assert not_paused.returncode == 1
    assert "job 'q' is not paused" in not_paused.stderr


# -- quiet, stop, dump ---------------------------------------------------------------------------


def test_quiet_all_acknowledged_by_every_process_moves_their_slots(
    two, spawn, iteration_log
) -> None:
    config, a, b = two
    ids = {identity_of(config, a), identity_of(config, b)}
    result = pb("quiet", "--all", "-c", str(config))
    assert result.returncode == 0, result.stderr
    lines = acked_lines(result.stdout)
    assert set(lines) == ids
    assert all(outcome.startswith("acknowledged in ") for outcome in lines.values())

    status = status_json("-c", str(config))
    assert [p["state"] for p in status["processes"]] == ["quiet", "quiet"]
    c = spawn(config, "c")
    wait_until(settled(iteration_log, {c.pid: 4}), 15, message="c runs all 4")
    assert a.popen.poll() is None and b.popen.poll() is None


def test_stop_by_identity_is_acknowledged_and_the_process_exits_0(two, iteration_log) -> None:
    config, a, b = two
    target = identity_of(config, a)
    result = pb("stop", target, "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert acked_lines(result.stdout)[target].startswith("acknowledged")
    assert a.wait(20) == 0
    wait_until(settled(iteration_log, {b.pid: 4}), 15, message="b runs all 4")


def test_host_selects_every_process_on_that_host(two) -> None:
    config, a, b = two
    result = pb("quiet", "--host", socket.gethostname(), "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert set(acked_lines(result.stdout)) == {identity_of(config, a), identity_of(config, b)}

    nowhere = pb("stop", "--host", "no-such-host.invalid", "-c", str(config))
    assert nowhere.returncode == 1
    assert "no live process on host 'no-such-host.invalid'" in nowhere.stderr
    assert a.popen.poll() is None and b.popen.poll() is None


def test_a_target_that_is_not_live_or_does_not_answer_fails_the_command(two) -> None:
    config, a, b = two
    target = identity_of(config, a)
    b.send(signal.SIGSTOP)
    try:
        stalled = identity_of(config, b)
        result = pb("quiet", target, stalled, "nobody:1:zzzzzz", "--wait", "1", "-c", str(config))
    finally:
        b.send(signal.SIGCONT)
    assert result.returncode == 1
    lines = acked_lines(result.stdout)
    assert lines[target].startswith("acknowledged")
    assert lines[stalled] == "not acknowledged within 1s"
    assert lines["nobody:1:zzzzzz"] == "not a live process"


def test_dump_writes_a_thread_dump_into_the_process_log(group_config, spawn) -> None:
    config = group_config({"q": {**JOB, "workers": 1}})
    a = spawn(config, "a")
    wait_until(lambda: running(config) == 1, 15, message="1 running")
    result = pb("dump", identity_of(config, a), "-c", str(config))
    assert result.returncode == 0, result.stderr
    wait_until(
        lambda: "thread dump" in a.log() and "pb-q-0" in a.log(),
        5,
        message="a thread dump naming the worker thread",
    )
