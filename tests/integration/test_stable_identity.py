"""Stable identities with real ``process-balancer run`` processes on Redis: a clean restart
gets the same slots back without moving any, a crashed run's successor waits for it, and a
second live process with the same name runs nothing."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support.harness import IterationLog, Process, running_by_pid, settled, wait_until

pytestmark = pytest.mark.backends("redis")

JOB = {"class": "support.jobs:RecordingJob", "records": 2, "record_time": 0.025}


def slots_of(log: IterationLog, pid: int, since: float) -> set[int]:
    return running_by_pid(log, since).get(pid, set())


def test_a_clean_restart_within_process_expiry_gets_the_same_slots_and_moves_none(
    group_config: Callable[..., Path],
    spawn: Callable[..., Process],
    iteration_log: IterationLog,
) -> None:
    config = group_config({"q": {**JOB, "workers": 6}}, heartbeat_interval=0.5, process_expiry=8)
    a = spawn(config, "a", "--stable-identity", "a")
    b = spawn(config, "b", "--stable-identity", "b")
    wait_until(settled(iteration_log, {a.pid: 3, b.pid: 3}), 20, message="3/3")
    # Whichever joined first ran every slot until the other joined: count from here.
    began = time.time() - 0.6
    mine = slots_of(iteration_log, a.pid, time.time() - 0.6)
    theirs = slots_of(iteration_log, b.pid, time.time() - 0.6)
    assert mine | theirs == set(range(6)) and not mine & theirs

    a.send(signal.SIGTERM)
    assert a.wait(20) == 0
    assert "stopped and handed over" in a.log()
    again = spawn(config, "a2", "--stable-identity", "a")
    wait_until(settled(iteration_log, {again.pid: 3, b.pid: 3}), 20, message="a back, 3/3")

    assert "handed its slots over" in again.log()
    assert "did not hand over" not in again.log()
    # The new run of a runs exactly a's slots, and b never ran any of them: nothing moved.
    ran = running_by_pid(iteration_log, began)
    assert ran == {a.pid: mine, b.pid: theirs, again.pid: mine}, (mine, theirs)
    assert iteration_log.overlaps() == []


def test_a_crashed_runs_successor_waits_for_it_then_runs_without_overlap(
    group_config: Callable[..., Path],
    spawn: Callable[..., Process],
    iteration_log: IterationLog,
) -> None:
    config = group_config(
        {"q": {**JOB, "workers": 4, "runtime_lock_timeout": 3, "takeover_grace": 0.5}},
        heartbeat_interval=0.3,
        process_expiry=2,
    )
    a = spawn(config, "a", "--stable-identity", "a")
    b = spawn(config, "b")
    wait_until(settled(iteration_log, {a.pid: 2, b.pid: 2}), 20, message="2/2")
    a.kill()
    iteration_log.dead[a.pid] = a.died_at or time.time()
    again = spawn(config, "a2", "--stable-identity", "a")
    wait_until(lambda: "did not hand over" in again.log(), 15, message="the new run says it waits")
    wait_until(
        settled(iteration_log, {again.pid: 2, b.pid: 2}), 30, message="the new run runs, 2/2"
    )
    assert "two processes use the same stable identity" not in again.log()
    assert iteration_log.overlaps() == []


def test_a_lone_crashed_runs_successor_frees_its_locks_instead_of_waiting_out_their_ttl(
    group_config: Callable[..., Path],
    spawn: Callable[..., Process],
    iteration_log: IterationLog,
) -> None:
    """No peer takes the crashed run's slots over, and its locks would outlive it by their
    30 s TTL once the name is renewed again: the successor takes them over and releases them
    once the old membership has ended, and runs every slot seconds after that."""
    config = group_config(
        {"q": {**JOB, "workers": 3, "runtime_lock_timeout": 30, "takeover_grace": 0.5}},
        heartbeat_interval=0.3,
        process_expiry=2,
    )
    a = spawn(config, "a", "--stable-identity", "a")
    wait_until(settled(iteration_log, {a.pid: 3}), 20, message="a runs 3")
    a.kill()
    iteration_log.dead[a.pid] = a.died_at or time.time()
    killed = time.time()
    again = spawn(config, "a2", "--stable-identity", "a")
    wait_until(settled(iteration_log, {again.pid: 3}), 15, message="the new run runs 3")
    assert time.time() - killed < 12, "the new run waited out the old locks' TTL"
    assert "freed 3 worker lock(s) left by the previous run of a" in again.log()
    assert iteration_log.overlaps() == []


def test_a_run_frozen_while_a_successor_took_its_name_stops_when_it_wakes(
    group_config: Callable[..., Path],
    spawn: Callable[..., Process],
    iteration_log: IterationLog,
) -> None:
    """An orchestrator replaced a frozen run (a partitioned node) by a new run of the same
    name. When the old one wakes it must not take the name back: it sees the successor,
    stops its iterations, exits 0 without another heartbeat, and the successor runs on."""
    config = group_config(
        {"q": {**JOB, "workers": 2, "runtime_lock_timeout": 3, "takeover_grace": 0.5}},
        heartbeat_interval=0.3,
        process_expiry=2,
    )
    old = spawn(config, "old", "--stable-identity", "a")
    wait_until(settled(iteration_log, {old.pid: 2}), 20, message="the old run runs 2")
    old.send(signal.SIGSTOP)
    frozen = time.time()
    new = spawn(config, "new", "--stable-identity", "a")
    wait_until(settled(iteration_log, {new.pid: 2}), 20, message="the successor runs 2")
    old.send(signal.SIGCONT)
    assert old.wait(20) == 0
    assert "has taken the name over" in old.log()
    time.sleep(1.0)
    assert settled(iteration_log, {new.pid: 2}, window=0.8)()
    # The old run began nothing after it woke; only an iteration it was in when it froze
    # may end late (what fencing tokens are for), so overlaps with that one are not counted.
    assert [i for i in iteration_log.intervals() if i.pid == old.pid and i.start > frozen] == []
    assert [(a, b) for a, b in iteration_log.overlaps() if old.pid not in (a.pid, b.pid)] == []
    assert new.popen.poll() is None


def test_a_second_live_process_with_the_same_name_runs_nothing_and_says_why(
    group_config: Callable[..., Path],
    spawn: Callable[..., Process],
    iteration_log: IterationLog,
) -> None:
    config = group_config({"q": {**JOB, "workers": 3}}, heartbeat_interval=0.3, process_expiry=1)
    a = spawn(config, "a", "--stable-identity", "a")
    wait_until(settled(iteration_log, {a.pid: 3}), 20, message="a runs 3")
    twin = spawn(config, "twin", "--stable-identity", "a")
    wait_until(
        lambda: "two processes use the same stable identity" in twin.log(),
        20,
        message="the twin reports the duplicate name",
    )
    assert "ERROR" in twin.log()
    assert settled(iteration_log, {a.pid: 3})()
    # A stop request while it waits exits cleanly, never having joined.
    twin.send(signal.SIGTERM)
    assert twin.wait(20) == 0
    assert "exiting without joining" in twin.log()
    assert twin.pid not in {event["pid"] for event in iteration_log.events()}
    assert iteration_log.overlaps() == []
