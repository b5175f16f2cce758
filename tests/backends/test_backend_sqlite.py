"""What is particular to the SQLite backend: rows it did not write, several processes on one
file, wake-ups by polling, and the runner choosing it when no backend is configured."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from process_balancer.backends import Backend, CorruptStateError, open_backend
from process_balancer.backends.sqlite.backend import SQLiteBackend
from process_balancer.backends.sqlite.connection import EVENTS_KEPT, sqlite_path
from support.cli import free_port
from support.harness import TESTS_DIR, IterationLog, wait_until, write_config

TRAITS = {"capacity": 4, "active": True, "jobs": ["j"], "defaults": {"j": 2}, "started_at": 1.0}


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'coordination.sqlite3'}"


@pytest.fixture
def backend(url: str) -> Iterator[SQLiteBackend]:
    b = SQLiteBackend(url, "ns")
    yield b
    b.close()


@pytest.fixture
def db(url: str, backend: SQLiteBackend) -> Iterator[sqlite3.Connection]:
    """A second, plain connection to the file, as another program (or a person) would use."""
    backend.snapshot()  # creates the tables
    conn = sqlite3.connect(str(sqlite_path(url)), isolation_level=None)
    yield conn
    conn.close()


def beat(backend: Backend, identity: str, expiry: float = 3.0) -> None:
    backend.heartbeat(
        identity, traits=TRAITS, info={"x": 1}, expiry=expiry, seen_assignment_version=-1
    )


# -- URLs and the file -------------------------------------------------------------------------


def test_a_relative_url_names_a_file_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    backend = open_backend("sqlite:///state/pb.sqlite3", "ns")
    try:
        beat(backend, "a")
    finally:
        backend.close()
    assert (tmp_path / "state" / "pb.sqlite3").is_file()
    assert sqlite_path("sqlite:////var/lib/pb.sqlite3") == Path("/var/lib/pb.sqlite3")


def test_the_file_is_in_wal_mode_with_every_table(url: str, backend: SQLiteBackend) -> None:
    beat(backend, "a")
    conn = sqlite3.connect(str(sqlite_path(url)))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert {"pb_groups", "pb_members", "pb_locks", "pb_events", "pb_counts"} <= tables


def test_namespaces_in_one_file_are_separate_groups(url: str, backend: SQLiteBackend) -> None:
    other = SQLiteBackend(url, "other")
    try:
        beat(backend, "a")
        beat(other, "b")
        backend.set_count("j", to=3, by=None, default=1)
        assert [m.identity for m in other.snapshot().members] == ["b"]
        assert other.get_count("j") is None
    finally:
        other.close()


# -- rows it did not write are reported and kept ----------------------------------------------


def test_garbage_count_is_reported_and_kept(
    backend: SQLiteBackend, db: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    db.execute("INSERT INTO pb_counts VALUES ('ns', 'j', 'lots')")
    with pytest.raises(CorruptStateError, match="'lots'"):
        backend.get_count("j")
    with pytest.raises(CorruptStateError, match="not an integer"):
        backend.set_count("j", to=None, by=1, default=1)
    with pytest.raises(CorruptStateError, match="not a count"):
        backend.pause("j", default=1)
    assert backend.snapshot().counts == {}
    assert "'lots', not an integer" in caplog.text
    assert db.execute("SELECT count FROM pb_counts").fetchall() == [("lots",)]
    assert backend.set_count("j", to=2, by=None, default=1) == 2  # an explicit count replaces it


def test_garbage_in_a_lock_row_is_reported_and_kept(
    backend: SQLiteBackend, db: sqlite3.Connection
) -> None:
    beat(backend, "a")
    db.execute("INSERT INTO pb_locks VALUES ('ns', 'j:0', 'tok', 'x', 'h', 1e12, NULL)")
    with pytest.raises(CorruptStateError, match="not a process-balancer lock"):
        backend.lock_acquire("j:0", "a", 5)
    assert db.execute("SELECT fence FROM pb_locks").fetchall() == [("x",)]


def test_a_garbage_resume_count_is_refused_and_kept(
    backend: SQLiteBackend, db: sqlite3.Connection
) -> None:
    db.execute("INSERT INTO pb_paused VALUES ('ns', 'j', 'many')")
    with pytest.raises(CorruptStateError, match="not a count"):
        backend.resume("j")
    assert backend.paused_counts() == {}
    assert db.execute("SELECT count FROM pb_paused").fetchall() == [("many",)]


def test_unreadable_member_traits_are_reported_by_name(
    backend: SQLiteBackend, db: sqlite3.Connection
) -> None:
    beat(backend, "a")
    db.execute("UPDATE pb_members SET traits = '{oops' WHERE identity = 'a'")
    with pytest.raises(CorruptStateError, match=r"identity 'a', traits holds unreadable data"):
        backend.snapshot()


def test_acks_expire(backend: SQLiteBackend, db: sqlite3.Connection) -> None:
    backend.ack_command("a:1:x", "c1", 123.5)
    backend.ack_command("b:2:y", "c1", 124.0)
    assert backend.command_acks("c1") == {"a:1:x": 123.5, "b:2:y": 124.0}
    db.execute("UPDATE pb_acks SET expires_at = 0 WHERE identity = 'a:1:x'")
    assert backend.command_acks("c1") == {"b:2:y": 124.0}


# -- wake-ups -----------------------------------------------------------------------------------


def test_events_reach_a_listener_in_another_connection_within_100_ms(
    url: str, backend: SQLiteBackend
) -> None:
    received: list[tuple[float, str]] = []
    stop = threading.Event()
    listener = SQLiteBackend(url, "ns")
    thread = threading.Thread(
        target=listener.listen, args=(lambda m: received.append((time.monotonic(), m)), stop)
    )
    thread.start()
    try:
        wait_until(lambda: received, 5, message="the listener to start")
        beat(backend, "a")
        sent = time.monotonic()
        held = backend.lock_acquire("j:0", "a", 5)
        assert held is not None
        backend.lock_release("j:0", held.token)
        wait_until(lambda: len(received) >= 3, 5, message="state and released events")
    finally:
        stop.set()
        thread.join(5)
        listener.close()
    messages = [m for _, m in received]
    assert messages == ["subscribed", "state", "released j:0"]
    assert received[-1][0] - sent < 0.3  # polled every 50 ms; slack for a loaded machine


def test_the_events_table_stays_bounded(backend: SQLiteBackend, db: sqlite3.Connection) -> None:
    for n in range(EVENTS_KEPT + 200):
        backend.set_count("j", to=n, by=None, default=1)
    assert db.execute("SELECT count(*) FROM pb_events").fetchone()[0] <= EVENTS_KEPT


# -- several processes on one file ---------------------------------------------------------------


def _contend(url: str, identity: str, rounds: int, results: multiprocessing.Queue) -> None:
    backend = SQLiteBackend(url, "ns")
    beat(backend, identity, expiry=60)
    held = []
    for _ in range(rounds):
        backend.set_count("counter", to=None, by=1, default=0)
        acquired = backend.lock_acquire("j:0", identity, 30)
        if acquired is not None:
            started = time.time()
            time.sleep(0.002)
            held.append((acquired.fence, started, time.time()))
            assert backend.lock_release("j:0", acquired.token)
    backend.close()
    results.put(held)


def test_processes_contending_on_one_file_never_share_a_lock_or_lose_an_update(
    url: str, backend: SQLiteBackend
) -> None:
    """Given four processes that each, 60 times, increment one count and try to take one lock,
    then every increment lands and no two holdings of the lock overlap, and every acquisition
    got a fencing token of its own."""
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(url, f"p{n}", 60, results)) for n in range(4)]
    for proc in procs:
        proc.start()
    holdings = [entry for _ in procs for entry in results.get(timeout=60)]
    for proc in procs:
        proc.join(10)
        assert proc.exitcode == 0
    assert backend.get_count("counter") == 4 * 60
    fences = sorted(fence for fence, _, _ in holdings)
    assert len(set(fences)) == len(fences) > 0
    by_start = sorted(holdings, key=lambda h: h[1])
    for (_, _, first_end), (_, second_start, _) in itertools.pairwise(by_start):
        assert second_start >= first_end - 0.0005, "two processes held the lock at once"


def test_a_deleted_lock_row_stops_the_running_iteration(
    tmp_path: Path, url: str, spawn, db: sqlite3.Connection
) -> None:
    log = IterationLog(tmp_path / "iterations.jsonl")
    job = {
        "class": "support.jobs:RecordingJob",
        "workers": 1,
        "records": 200,
        "record_time": 0.05,
        "runtime_lock_timeout": 1.5,
        "log_path": str(log.path),
    }
    config = write_config(tmp_path / "pb.yml", backend=url, namespace="ns", jobs={"q": job})
    a = spawn(config, "a")
    wait_until(lambda: log.intervals(), 15, message="a running")
    time.sleep(0.2)
    db.execute("DELETE FROM pb_locks WHERE name = 'q:0'")
    deleted_at = time.time()
    first = wait_until(
        lambda: [i for i in log.intervals() if i.closed], 10, message="the iteration to end"
    )[0]
    assert first.done is not None and first.done < 200
    assert first.end - deleted_at < 2.0
    assert "lost its worker lock" in a.log()


# -- the runner's default ------------------------------------------------------------------------


def _run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "APP_ENV")}
    environ["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), environ.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, "-m", "process_balancer", "run", *args],
        cwd=str(cwd),
        env={**environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=20)
    return output


def test_without_a_backend_the_runner_uses_a_sqlite_file_and_says_so_once(
    tmp_path: Path,
) -> None:
    (tmp_path / "process_balancer.yml").write_text(
        "jobs:\n  q:\n    class: support.jobs:RecordingJob\n    workers: 1\n"
        f"    log_path: {tmp_path / 'iterations.jsonl'}\n"
    )
    proc = _run(tmp_path)
    log = IterationLog(tmp_path / "iterations.jsonl")
    try:
        wait_until(lambda: log.intervals(), 20, message="the job to run")
    finally:
        output = _stop(proc)
    assert proc.returncode == 0, output
    assert (tmp_path / "process_balancer.sqlite3").is_file()
    notices = [line for line in output.splitlines() if "single-host mode" in line]
    assert len(notices) == 1, output
    assert str(tmp_path / "process_balancer.sqlite3") in notices[0]
    assert "no backend configured and REDIS_URL unset" in notices[0]
    assert "redis://" in notices[0] and "postgresql://" in notices[0]


def test_a_configured_redis_that_is_down_is_reported_and_retried_never_replaced(
    tmp_path: Path,
) -> None:
    port = free_port()
    (tmp_path / "process_balancer.yml").write_text(
        f"global:\n  backend: redis://127.0.0.1:{port}/0\njobs: {{}}\n"
    )
    proc = _run(tmp_path)
    time.sleep(3)
    output = _stop(proc)
    assert f"cannot reach Redis at redis://127.0.0.1:{port}/0" in output
    assert "retrying every 1s until it answers" in output
    assert output.count("cannot reach") == 1, output
    assert "single-host mode" not in output
    assert not (tmp_path / "process_balancer.sqlite3").exists()
