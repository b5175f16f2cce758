"""The PostgreSQL connection budget: at most 2 connections per process (one for calls, one for
LISTEN) plus one per held advisory lock, calls taking turns on the shared one with heartbeats
and renewals first and none of them holding it longer than its timeout; so 40 processes fit on
a server with the default ``max_connections = 100``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from process_balancer.backends import BackendError
from process_balancer.backends.postgres import PostgresBackend, parse_url
from process_balancer.backends.postgres.connections import CALL_TIMEOUT, ConnectionPool
from support.cli import pb
from support.harness import settled, wait_until

TRAITS = {"capacity": 4, "active": True, "jobs": ["j"], "defaults": {"j": 1}, "started_at": 1.0}

#: Connections per process and advisory locks held, per pid, in one snapshot of the server.
PER_PROCESS = """
SELECT substring(a.application_name FROM '^process_balancer\\[([0-9]+)\\]')::int AS pid,
       count(*),
       count(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM pg_locks l
           WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted))
FROM pg_stat_activity a
WHERE a.application_name LIKE 'process\\_balancer[%%'
GROUP BY 1
"""


@pytest.fixture
def db(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        yield conn


def per_process(db: psycopg.Connection[Any], pids: set[int]) -> dict[int, tuple[int, int]]:
    """pid -> (open connections, held advisory locks) of the given processes."""
    return {pid: (conns, locks) for pid, conns, locks in db.execute(PER_PROCESS) if pid in pids}


def beat(backend: PostgresBackend, identity: str = "a") -> Any:
    return backend.heartbeat(
        identity, traits=TRAITS, info={}, expiry=3.0, seen_assignment_version=-1
    )


# -- the shared call connection -------------------------------------------------------------------


def test_urgent_callers_go_before_callers_that_waited_longer(postgresql_backend_url: str) -> None:
    """Given the one connection busy and a caller waiting for it, when an urgent caller (a
    heartbeat) comes later, then it gets the connection first."""
    target = parse_url(postgresql_backend_url)
    pool = ConnectionPool(target.conninfo, size=1, purpose="test", display="test")
    order: list[str] = []

    def call(name: str, urgent: bool, seconds: float = 0.01) -> None:
        with pool.connection(urgent=urgent) as conn:
            order.append(name)
            conn.execute("SELECT pg_sleep(%s)", (seconds,))

    try:
        busy = threading.Thread(target=call, args=("busy", False, 0.5))
        busy.start()
        wait_until(lambda: order, 5, message="the first call")
        normal = threading.Thread(target=call, args=("normal", False))
        normal.start()
        time.sleep(0.01)
        urgent = threading.Thread(target=call, args=("urgent", True))
        urgent.start()
        for thread in (busy, normal, urgent):
            thread.join(5)
    finally:
        pool.close()
    assert order == ["busy", "urgent", "normal"]


def test_a_stalled_call_is_cancelled_after_the_call_timeout_and_the_heartbeat_goes_through(
    postgresql_backend_url: str, namespace: str, db
) -> None:
    """Given another session holding a worker lock's row, when a worker asks for that lock,
    then its call is cancelled after CALL_TIMEOUT (well within the process expiry), and a
    heartbeat sent meanwhile waits at most that long for the shared connection."""
    backend = PostgresBackend(postgresql_backend_url, namespace)
    target = parse_url(postgresql_backend_url)
    failures: list[tuple[Exception, float]] = []
    try:
        # A lock is granted only once a heartbeat reached the group.
        backend.heartbeat("a", traits={}, info={}, expiry=30, seen_assignment_version=-1)
        assert backend.lock_acquire("j:0", "a", 0.001) is not None  # creates the row
        with psycopg.connect(target.conninfo) as holder:
            holder.execute(
                f"SELECT 1 FROM {target.quoted_schema}.pb_locks WHERE namespace = %s FOR UPDATE",
                (namespace,),
            )

            def stalled() -> None:
                started = time.monotonic()
                try:
                    backend.lock_acquire("j:0", "a", 30)
                except BackendError as exc:
                    failures.append((exc, time.monotonic() - started))

            caller = threading.Thread(target=stalled)
            caller.start()
            time.sleep(0.1)
            sent_at = time.monotonic()
            beat(backend)
            heartbeat_took = time.monotonic() - sent_at
            caller.join(5)
            holder.rollback()
    finally:
        backend.close()
    assert heartbeat_took < CALL_TIMEOUT + 0.3
    assert len(failures) == 1
    error, took = failures[0]
    assert "statement timeout" in str(error)
    assert CALL_TIMEOUT - 0.1 < took < CALL_TIMEOUT + 0.5


TIMEOUT_MS = "SELECT setting FROM pg_settings WHERE name = 'statement_timeout'"


def test_a_url_may_set_its_own_call_timeout(postgresql_backend_url: str) -> None:
    target = parse_url(postgresql_backend_url + "&options=-c%20statement_timeout%3D2500")
    pool = ConnectionPool(target.conninfo, size=1, purpose="test", display="test")
    try:
        with pool.connection() as conn:
            assert conn.execute(TIMEOUT_MS).fetchone() == ("2500",)
    finally:
        pool.close()
    target = parse_url(postgresql_backend_url)
    default = ConnectionPool(target.conninfo, size=1, purpose="test", display="test")
    try:
        with default.connection() as conn:
            row = conn.execute(TIMEOUT_MS).fetchone()
    finally:
        default.close()
    assert row == (str(int(CALL_TIMEOUT * 1000)),)


# -- real processes -------------------------------------------------------------------------------


@pytest.mark.backends("postgresql")
def test_a_process_keeps_at_most_two_connections_plus_one_per_held_advisory_lock(
    group_config, spawn, iteration_log, db
) -> None:
    """Given 3 processes running a job of 5 ms iterations on the backend's lock (a lock call
    every few ms from each worker) and a job on advisory locks, one slot each, then no process
    ever has more than 2 connections beside those holding its advisory locks."""
    tiny = {"class": "support.jobs:RecordingJob", "records": 1, "record_time": 0.005}
    long = {"class": "support.jobs:AdvisoryRecordingJob", "records": 400, "record_time": 0.05}
    config = group_config({"q": {**tiny, "workers": 9}, "adv": {**long, "workers": 3}})
    procs = [spawn(config, f"p{i}") for i in range(3)]
    pids = {p.pid for p in procs}

    def advisory_locks_held() -> bool:
        counts = per_process(db, pids)
        return len(counts) == 3 and all(locks == 1 for _, locks in counts.values())

    wait_until(advisory_locks_held, 30, message="each process holding its advisory lock")
    seen: set[int] = set()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        for pid, (conns, locks) in per_process(db, pids).items():
            seen.add(pid)
            assert conns - locks <= 2, f"process {pid}: {conns} connections, {locks} locks"
        time.sleep(0.05)
    assert set(seen) == pids
    runs = iteration_log.slots_run_by(time.time() - 2)
    assert {slot for job, slot in runs if job == "q"} == set(range(9))


@pytest.mark.backends("postgresql")
def test_40_processes_join_and_run_on_a_server_with_100_connections(
    group_config, spawn, iteration_log, db, postgresql_backend_url: str
) -> None:
    """Given a server with max_connections = 100 (the default), when 40 processes start at
    once with one slot each, then all join and run their slot and none is refused a
    connection (2 each: 80)."""
    (max_connections,) = db.execute("SHOW max_connections").fetchone() or (0,)
    assert int(max_connections) == 100, "this test shows 40 processes fit in 100 connections"
    assert pb("migrate", "--backend", postgresql_backend_url).returncode == 0
    job = {"class": "support.jobs:RecordingJob", "records": 1, "record_time": 0.01}
    config = group_config({"q": {**job, "workers": 40, "sleep_after": 0.5}})
    procs = [spawn(config, f"p{i}") for i in range(40)]
    pids = {p.pid for p in procs}
    most = 0

    def each_runs_one_slot() -> bool:
        nonlocal most
        most = max(most, sum(conns for conns, _ in per_process(db, pids).values()))
        return settled(iteration_log, dict.fromkeys(pids, 1), window=2.0)()

    wait_until(each_runs_one_slot, 100, interval=0.5, message="40 processes each running a slot")
    for proc in procs:
        log = proc.log()
        assert "too many clients" not in log, f"{proc.name}: {log[-2000:]}"
        assert proc.popen.poll() is None, f"{proc.name} exited: {log[-2000:]}"
    assert most <= 80
