"""Real processes through the faults that used to let two processes run one slot: a holder
frozen past its membership that wakes up, a Redis that restarts empty, and a process that
exits past its shutdown_timeout while a record still runs. Every record is logged (slot,
process, fencing token, start, end) and checked for overlaps and token regressions."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from process_balancer.backends import open_backend
from support.harness import Process, wait_until, write_config
from support.record_log import overlaps, read_records, slots_running, token_regressions
from support.servers import RedisServer

JOB_CLASS = "support.record_log:RecordLoggingJob"


def job(record_log: Path, workers: int, **options: object) -> dict[str, dict[str, object]]:
    return {
        "q": {
            "class": JOB_CLASS,
            "workers": workers,
            "record_log": str(record_log),
            **options,
        }
    }


def all_running(log: Path, slots: int, window: float = 0.5) -> Callable[[], bool]:
    def check() -> bool:
        return len(slots_running(read_records(log), time.time() - window)) == slots

    return check


@pytest.mark.backends("redis", "sqlite", "postgresql")
def test_a_frozen_holder_that_wakes_up_stops_at_its_next_record(
    tmp_path: Path, backend_url: str, namespace: str, spawn: Callable[..., Process]
) -> None:
    """Given two processes sharing two slots, when one is frozen (SIGSTOP) until its peer has
    taken its slot over and then woken, it starts no further record of that slot: its
    heartbeat finds that its membership lapsed and cuts its leases before extending it."""
    log = tmp_path / "records.jsonl"
    config = write_config(
        tmp_path / "pb.yml",
        backend=backend_url,
        namespace=namespace,
        # A long lock TTL: the stale holder is not stopped by a failed renewal first.
        jobs=job(
            log, 2, records=200, record_time=0.02, runtime_lock_timeout=120, takeover_grace=0.5
        ),
    )
    a = spawn(config, "a")
    wait_until(all_running(log, 2), 20, message="both slots running on a")
    b = spawn(config, "b")
    wait_until(
        lambda: len({r.pid for r in read_records(log) if r.start > time.time() - 0.5}) == 2,
        20,
        message="the slots split over a and b",
    )
    a.send(signal.SIGSTOP)
    frozen_at = time.time()
    wait_until(
        lambda: (
            {r.pid for r in read_records(log) if r.start > frozen_at + 0.2} == {b.pid}
            and len(slots_running(read_records(log), time.time() - 0.5)) == 2
        ),
        20,
        message="b running both slots",
    )
    a.send(signal.SIGCONT)
    woken_at = time.time()
    time.sleep(3)
    records = read_records(log)
    # The record a was inside when frozen ends after it wakes (fencing is for that one);
    # anything a starts once awake must not overlap b.
    late = [r for r in records if r.pid == a.pid and r.start >= woken_at + 0.2]
    clashes = overlaps(records, since=woken_at + 0.2)
    assert clashes == [], f"{len(clashes)} overlapping records, first {clashes[:1]}"
    # And what it started before being cut off at all, after waking, is at most a record.
    assert all(r.start >= woken_at + 0.2 or r.start < frozen_at + 0.05 for r in late)
    assert token_regressions(records) == []
    assert a.popen.poll() is None and b.popen.poll() is None
    wait_until(all_running(log, 2), 10, message="the group whole again")


def test_a_redis_restarted_empty_never_lets_two_processes_run_a_slot(
    tmp_path: Path, redis_server: RedisServer, spawn: Callable[..., Process]
) -> None:
    """Given three processes running six slots on a Redis without persistence, when Redis
    restarts empty, the first process back must not take the slots the others still run:
    the group begins a new incarnation, every process cuts its leases, and no worker lock is
    granted until the old holders must have stopped. Tokens keep increasing per slot."""
    log = tmp_path / "records.jsonl"
    config = write_config(
        tmp_path / "pb.yml",
        backend=redis_server.url,
        namespace="restart",
        jobs=job(log, 6, records=500, record_time=0.02),
    )
    procs = [spawn(config, name) for name in ("a", "b", "c")]
    wait_until(
        lambda: (
            len({r.pid for r in read_records(log) if r.start > time.time() - 0.5}) == 3
            and all_running(log, 6)()
        ),
        30,
        message="six slots over three processes",
    )
    redis_server.restart_empty()
    restarted_at = time.time()
    wait_until(
        lambda: (
            len(slots_running(read_records(log), restarted_at + 0.1)) == 6 and all_running(log, 6)()
        ),
        20,
        message="all six slots running again",
    )
    whole_after = time.time() - restarted_at
    time.sleep(1)
    records = read_records(log)
    clashes = overlaps(records)
    assert clashes == [], f"{len(clashes)} overlapping records, first {clashes[:1]}"
    assert token_regressions(records) == []
    assert all(p.popen.poll() is None for p in procs)
    # process_expiry (3 s) + takeover_grace (1 s) of hold, plus a heartbeat and the start.
    assert whole_after < 8, f"whole again only {whole_after:.1f}s after the restart"


def test_a_process_past_its_shutdown_timeout_does_not_leave_while_a_record_runs(
    tmp_path: Path, redis_url: str, namespace: str, spawn: Callable[..., Process]
) -> None:
    """A record that outlives shutdown_timeout keeps its slot off-limits: the process exits
    without leaving the group, so a peer takes the slot over only after the membership
    expired plus takeover_grace, not at once."""
    log = tmp_path / "records.jsonl"
    config = write_config(
        tmp_path / "pb.yml",
        backend=redis_url,
        namespace=namespace,
        jobs=job(log, 1, records=1, record_time=6),
        shutdown_timeout=0.5,
    )
    a = spawn(config, "a")
    backend = open_backend(redis_url, namespace)
    try:
        wait_until(
            lambda: any(m.info.get("running") for m in backend.snapshot().members),
            20,
            message="a running its slot",
        )
        # "running" is set once the slot's worker starts; its 6 s record begins a moment later
        # (lock, lock_records), and the stop must come while that record runs.
        time.sleep(1.5)
        (identity,) = [m.identity for m in backend.snapshot().members]
        a.send(signal.SIGTERM)
        # a's last heartbeat + process_expiry, on the server's clock, as last seen alive.
        deadline = 0.0
        while a.popen.poll() is None:
            for member in backend.snapshot().members:
                if member.identity == identity:
                    deadline = max(deadline, member.deadline)
            time.sleep(0.05)
        assert a.wait(10) == 0
        log_text = a.log()
        assert "does not leave the group" in log_text
        assert "left the group" not in log_text, "the process left with a record running"
        still_member = [m for m in backend.snapshot().members if m.identity == identity]
        assert still_member or time.time() >= deadline, "a's membership was removed, not expired"
        b = spawn(config, "b")
        wait_until(lambda: read_records(log) and read_records(log)[-1].pid == b.pid, 20)
        first_b = min(r.start for r in read_records(log) if r.pid == b.pid)
        # b's first record started no sooner than a's deadline + takeover_grace (1 s); the
        # server (local Redis) and this test share the host's clock.
        assert first_b >= deadline + 1.0 - 0.05, (first_b, deadline)
    finally:
        backend.close()
