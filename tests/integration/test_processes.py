"""Real ``process-balancer run`` processes against real Redis, steered by real signals.

Every test job logs when it enters and leaves each slot's iteration; the exclusivity checks
rebuild those intervals and fail on any two that overlap for one slot.
"""

from __future__ import annotations

import itertools
import signal
import time
from pathlib import Path

import pytest

import process_balancer
from support.harness import IterationLog, Process, running_by_pid, settled, wait_until

JOB = {"class": "support.jobs:RecordingJob", "records": 4, "record_time": 0.025}


def loads(log: IterationLog, window: float = 0.6) -> list[int]:
    """Sorted numbers of slots each process ran in the last ``window`` seconds."""
    return sorted(len(s) for s in running_by_pid(log, time.time() - window).values())


@pytest.fixture
def client(backend_url: str, namespace: str):
    c = process_balancer.configure(backend=backend_url, namespace=namespace)
    yield c


def assert_no_overlaps(log: IterationLog) -> None:
    overlaps = log.overlaps()
    assert not overlaps, f"{len(overlaps)} overlapping iterations, first: {overlaps[0]}"


def test_slots_are_split_between_two_processes(group_config, spawn, iteration_log) -> None:
    config = group_config({"q": {**JOB, "workers": 4}})
    a = spawn(config)
    b = spawn(config)
    wait_until(settled(iteration_log, {a.pid: 2, b.pid: 2}), 15, message="a 2/2 split")
    all_slots = set().union(*running_by_pid(iteration_log, 0).values())
    assert all_slots == {0, 1, 2, 3}
    assert_no_overlaps(iteration_log)


def test_never_two_runners_on_one_slot_through_joins_leaves_kills_and_scaling(
    group_config, spawn, iteration_log, client
) -> None:
    """Given a group under churn, when processes join, quiet, stop, die and N changes,
    then every scheduled slot keeps running and no slot ever runs twice at once."""
    config = group_config({"q": {**JOB, "workers": 6}})
    a = spawn(config, "a")
    wait_until(settled(iteration_log, {a.pid: 6}), 15, message="a runs 6")

    b = spawn(config, "b")
    wait_until(settled(iteration_log, {a.pid: 3, b.pid: 3}), 15, message="b joins: 3/3")

    client.adjust_scheduled_workers("q", to=9)
    wait_until(lambda: loads(iteration_log) == [4, 5], 15, message="scaled to 9: 4/5")

    c = spawn(config, "c")
    wait_until(settled(iteration_log, {a.pid: 3, b.pid: 3, c.pid: 3}), 15, message="3/3/3")

    a.send(signal.SIGUSR1)  # quiet
    wait_until(
        lambda: (
            loads(iteration_log) == [4, 5]
            and a.pid not in running_by_pid(iteration_log, time.time() - 0.6)
        ),
        15,
        message="a quiet: b and c run 9",
    )

    b.send(signal.SIGTERM)
    assert b.wait(20) == 0
    wait_until(settled(iteration_log, {c.pid: 9}), 15, message="c runs all 9")

    client.adjust_scheduled_workers("q", by=-6)
    d = spawn(config, "d")
    wait_until(lambda: loads(iteration_log) == [1, 2], 15, message="3 over c and d")

    c.kill()
    iteration_log.dead[c.pid] = c.died_at or time.time()
    wait_until(settled(iteration_log, {d.pid: 3}), 15, message="d takes over after kill")

    assert_no_overlaps(iteration_log)
    a.send(signal.SIGTERM)
    d.send(signal.SIGTERM)
    assert a.wait(20) == 0
    assert d.wait(20) == 0


def test_killed_process_slots_run_elsewhere_after_expiry(
    group_config, spawn, iteration_log
) -> None:
    config = group_config({"q": {**JOB, "workers": 4}})
    a = spawn(config, "a")
    b = spawn(config, "b")
    wait_until(settled(iteration_log, {a.pid: 2, b.pid: 2}), 15, message="2/2")
    a.kill()
    iteration_log.dead[a.pid] = a.died_at or time.time()
    killed_at = time.time()
    wait_until(settled(iteration_log, {b.pid: 4}, window=0.3), 15, message="b runs all 4")
    took = time.time() - killed_at
    # process_expiry is 3 s by default; allow generous slack for a loaded CI machine.
    assert took < 9, f"slots moved after {took:.1f}s"
    assert_no_overlaps(iteration_log)


def test_term_hands_slots_over_waits_for_iterations_and_exits_zero(
    group_config, spawn, iteration_log
) -> None:
    config = group_config({"q": {**JOB, "workers": 4, "records": 20, "record_time": 0.05}})
    a = spawn(config, "a")
    b = spawn(config, "b")
    wait_until(settled(iteration_log, {a.pid: 2, b.pid: 2}, window=1.5), 20, message="2/2")
    a.send(signal.SIGTERM)
    assert a.wait(20) == 0
    log = a.log()
    assert "left the group" in log
    # Every iteration a started was finished (unlock_records ran) before it exited.
    assert all(i.closed for i in iteration_log.intervals() if i.pid == a.pid)
    wait_until(settled(iteration_log, {b.pid: 4}, window=1.5), 15, message="b runs all 4")
    assert_no_overlaps(iteration_log)


def test_second_term_exits_at_once(group_config, spawn, iteration_log) -> None:
    config = group_config(
        {"q": {**JOB, "workers": 1, "records": 10, "record_time": 30}}, shutdown_timeout=60
    )
    a = spawn(config, "a")
    wait_until(lambda: running_by_pid(iteration_log, 0), 15, message="a running")
    a.send(signal.SIGTERM)
    time.sleep(0.5)
    assert a.popen.poll() is None, "first TERM must wait for the running iteration"
    started = time.monotonic()
    a.send(signal.SIGTERM)
    code = a.wait(10)
    assert time.monotonic() - started < 3
    assert code != 0


def test_job_exceptions_keep_the_process_alive_and_back_off(
    group_config, spawn, iteration_log
) -> None:
    config = group_config({"bad": {"class": "support.jobs:FailingJob", "workers": 1}})
    a = spawn(config, "a")

    def ends() -> list[dict]:
        return [e for e in iteration_log.events() if e["ev"] == "end"]

    def afters() -> int:
        return len([e for e in iteration_log.events() if e["ev"] == "after"])

    # unlock_records ("end") and after_perform ("after", logged a moment later) ran after
    # every exception.
    wait_until(lambda: len(ends()) >= 3 and afters() >= 3, 20, message="three failed iterations")
    assert a.popen.poll() is None
    times = [e["t"] for e in ends()]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps[1] > gaps[0] * 1.4, f"restart delays did not grow: {gaps}"
    assert "RuntimeError: boom from FailingJob" in a.log()


@pytest.mark.backends("redis")
def test_lost_lock_stops_the_iteration_and_unlock_records_runs(
    group_config, spawn, iteration_log, rclient, namespace
) -> None:
    config = group_config(
        {
            "q": {
                **JOB,
                "workers": 1,
                "records": 200,
                "record_time": 0.05,
                "runtime_lock_timeout": 1.5,
            }
        }
    )
    a = spawn(config, "a")
    wait_until(lambda: running_by_pid(iteration_log, 0), 15, message="a running")
    time.sleep(0.2)
    rclient.delete(f"{namespace}:lock:q:0")
    deleted_at = time.time()
    first = wait_until(
        lambda: [i for i in iteration_log.intervals() if i.closed],
        10,
        message="the iteration to end",
    )[0]
    assert first.done is not None and first.done < 200
    assert first.end - deleted_at < 2.0
    assert "lost its worker lock" in a.log()


def test_status_abort_ends_the_worker_and_a_fresh_one_starts(
    group_config, spawn, iteration_log
) -> None:
    config = group_config({"q": {**JOB, "class": "support.jobs:AbortingJob", "workers": 1}})
    spawn(config, "a")
    wait_until(
        lambda: len([i for i in iteration_log.intervals() if i.closed]) >= 2,
        15,
        message="two iterations of two worker instances",
    )


def test_quiet_process_gives_up_all_slots(group_config, spawn, iteration_log) -> None:
    config = group_config({"q": {**JOB, "workers": 4}})
    a = spawn(config, "a")
    b = spawn(config, "b")
    wait_until(settled(iteration_log, {a.pid: 2, b.pid: 2}), 15, message="2/2")
    a.send(signal.SIGTSTP)
    wait_until(settled(iteration_log, {b.pid: 4}), 10, message="b runs all 4")
    assert a.popen.poll() is None, "a quiet process keeps running"
    assert_no_overlaps(iteration_log)


def test_remote_commands_quiet_and_stop_a_process(
    group_config, spawn, iteration_log, client
) -> None:
    config = group_config({"q": {**JOB, "workers": 2}})
    a = spawn(config, "a")
    b = spawn(config, "b")
    wait_until(settled(iteration_log, {a.pid: 1, b.pid: 1}), 15, message="1/1")
    identity = next(m.identity for m in client.processes() if m.traits["pid"] == a.pid)
    assert client.send_command(identity, "quiet")
    wait_until(settled(iteration_log, {b.pid: 2}), 10, message="b runs both")
    assert client.send_command(identity, "stop")
    assert a.wait(15) == 0


def test_ttin_dumps_every_thread(group_config, spawn, iteration_log) -> None:
    config = group_config({"q": {**JOB, "workers": 1}})
    a = spawn(config, "a")
    wait_until(lambda: running_by_pid(iteration_log, 0), 15, message="a running")
    a.send(signal.SIGTTIN)
    wait_until(
        lambda: "thread dump" in a.log() and "pb-q-0" in a.log(),
        5,
        message="a thread dump naming the worker thread",
    )


def test_counts_change_at_runtime(group_config, spawn, iteration_log, client) -> None:
    config = group_config({"q": {**JOB, "workers": 1}})
    a = spawn(config, "a")
    wait_until(settled(iteration_log, {a.pid: 1}), 15, message="1 slot")
    assert client.scheduled_workers("q") == 1
    assert client.adjust_scheduled_workers("q", by=2) == 3
    wait_until(settled(iteration_log, {a.pid: 3}), 10, message="3 slots")
    wait_until(lambda: client.running_workers("q") == 3, 5, message="running_workers == 3")
    client.adjust_scheduled_workers("q", to=0)
    wait_until(lambda: client.running_workers("q") == 0, 10, message="no workers")


def test_bad_config_exits_2_and_names_the_key(tmp_path: Path, spawn) -> None:
    config = tmp_path / "bad.yml"
    config.write_text("global:\n  max_threads: lots\njobs: {}\n")
    proc: Process = spawn(config, "bad")
    assert proc.wait(20) == 2
    assert "global.max_threads" in proc.log()
    assert "Traceback" not in proc.log()


def test_unimportable_job_class_exits_2(tmp_path: Path, spawn) -> None:
    config = tmp_path / "bad.yml"
    config.write_text("jobs:\n  q:\n    class: nowhere.jobs:Missing\n")
    proc: Process = spawn(config, "bad")
    assert proc.wait(20) == 2
    assert "jobs.q.class" in proc.log()


def test_a_stalled_backend_stops_iterations_before_anyone_could_take_over(
    tmp_path: Path, private_redis, redis_url, namespace, spawn, iteration_log
) -> None:
    """Given Redis stops answering, the worker cannot renew anything: its iteration must end
    (unlock_records runs) before its membership could have expired on the server, long
    before the 30 s lock TTL; once Redis answers again the process rejoins and runs again."""
    from support.harness import write_config

    config = write_config(
        tmp_path / "stall.yml",
        backend=private_redis.url,
        namespace=namespace,
        jobs={
            "q": {
                **JOB,
                "workers": 1,
                "records": 1000,
                "record_time": 0.05,
                "log_path": str(iteration_log.path),
            }
        },
    )
    a = spawn(config, "a")
    wait_until(lambda: running_by_pid(iteration_log, 0), 15, message="a running")
    private_redis.send_signal(signal.SIGSTOP)
    stalled_at = time.time()
    try:
        ended = wait_until(
            lambda: [i for i in iteration_log.intervals() if i.closed],
            10,
            message="the iteration to end while Redis is stalled",
        )[0]
    finally:
        private_redis.send_signal(signal.SIGCONT)
    # process_expiry is 3 s: the iteration must end before then (plus one record).
    assert ended.end - stalled_at < 3.2, f"iteration ended {ended.end - stalled_at:.2f}s later"
    resumed_after = time.time()
    wait_until(
        lambda: running_by_pid(iteration_log, resumed_after),
        15,
        message="a runs again after Redis is back",
    )
    assert a.popen.poll() is None


def owners(log: IterationLog, since: float, until: float, job: str = "q") -> dict[int, list[int]]:
    """slot -> sequence of pids that started its iterations in [since, until), repeats merged."""
    result: dict[int, list[int]] = {}
    for event in log.events():
        if event["ev"] != "start" or event["job"] != job or not since <= event["t"] < until:
            continue
        sequence = result.setdefault(event["slot"], [])
        if not sequence or sequence[-1] != event["pid"]:
            sequence.append(event["pid"])
    return result


def first_start_on(log: IterationLog, pid: int, slots: int, since: float) -> float | None:
    """Time by which ``pid`` had started iterations on ``slots`` distinct slots after ``since``."""
    seen: dict[int, float] = {}
    for event in log.events():
        if event["ev"] == "start" and event["pid"] == pid and event["t"] >= since:
            seen.setdefault(event["slot"], event["t"])
    if len(seen) < slots:
        return None
    return sorted(seen.values())[slots - 1]


def test_handoffs_are_fast_minimal_and_flap_free(group_config, spawn, iteration_log) -> None:
    """Join, TERM, quiet and SIGKILL with default settings and 0.1 s iterations: the slots
    move within 3x the product's goals, only the slots that must move do, no slot flaps
    between owners and no slot ever runs twice at once."""
    config = group_config({"q": {**JOB, "workers": 6}})
    a = spawn(config, "a")
    wait_until(settled(iteration_log, {a.pid: 6}), 15, message="a runs 6")

    # Join: goal 1 s including process start.
    spawned = time.time()
    b = spawn(config, "b")
    joined = wait_until(
        lambda: first_start_on(iteration_log, b.pid, 3, spawned), 15, message="b runs its share"
    )
    assert joined - spawned < 3.0, f"join took {joined - spawned:.2f}s"
    wait_until(settled(iteration_log, {a.pid: 3, b.pid: 3}), 5, message="3/3")
    moved = owners(iteration_log, spawned, time.time())
    assert sum(len(seq) - 1 for seq in moved.values()) == 3, moved

    # TERM: goal 1 s after the running iteration ends (iterations are 0.1 s).
    b_slots = running_by_pid(iteration_log, time.time() - 0.5)[b.pid]
    termed = time.time()
    b.send(signal.SIGTERM)
    assert b.wait(15) == 0
    took_over = wait_until(
        lambda: (
            all(
                (
                    ("q", s) in iteration_log.slots_run_by(termed)
                    and a.pid in iteration_log.slots_run_by(termed)[("q", s)]
                )
                for s in b_slots
            )
            and time.time()
        ),
        10,
        message="a runs b's slots",
    )
    assert took_over - termed < 3.0, f"TERM handoff took {took_over - termed:.2f}s"

    # Quiet: same goal.
    c = spawn(config, "c")
    wait_until(settled(iteration_log, {a.pid: 3, c.pid: 3}), 15, message="3/3 with c")
    quieted = time.time()
    c.send(signal.SIGUSR1)
    wait_until(settled(iteration_log, {a.pid: 6}, window=0.3), 10, message="a runs all 6")
    assert time.time() - quieted < 3.0 + 0.3

    # SIGKILL: goal 5 s with defaults.
    c.send(signal.SIGTERM)
    assert c.wait(15) == 0
    d = spawn(config, "d")
    wait_until(settled(iteration_log, {a.pid: 3, d.pid: 3}), 15, message="3/3 with d")
    d.kill()
    iteration_log.dead[d.pid] = d.died_at or time.time()
    killed = d.died_at or time.time()
    wait_until(settled(iteration_log, {a.pid: 6}, window=0.3), 20, message="a runs all 6")
    assert time.time() - killed < 15.0

    for sequence in owners(iteration_log, 0, time.time()).values():
        # No slot ever goes back to an owner it left (A -> B -> A) within these events,
        # except a, which legitimately gets slots back when b, c and d leave.
        others = [pid for pid in sequence if pid != a.pid]
        assert len(others) == len(set(others)), f"a slot flapped: {sequence}"
    assert_no_overlaps(iteration_log)
