"""What is particular to the SQLite backend about partitioned jobs: partitions it cannot read,
gate rows it did not write, repair, and a file written before either existed."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from process_balancer.backends import Gate, Partition
from process_balancer.backends.sqlite.backend import SQLiteBackend
from process_balancer.backends.sqlite.connection import sqlite_path

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


def beat(backend: SQLiteBackend, identity: str) -> None:
    backend.heartbeat(identity, traits=TRAITS, info={}, expiry=3.0, seen_assignment_version=-1)


def test_unreadable_partitions_are_named_and_repair_removes_them_keeping_counts(
    backend: SQLiteBackend, db: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    beat(backend, "a")
    backend.set_count("j", to=3, by=None, default=2)
    version = backend.snapshot().version
    assert backend.write_assignment(version, {"a": {"j": (0,)}}, {}, {"j": Partition(1, 4)})
    db.execute("UPDATE pb_groups SET partitions = '{\"j\": [1]}' WHERE namespace = 'ns'")
    where = "table pb_groups, namespace 'ns', partitions"
    # The heartbeat goes on, its slots without partitions (the runner then asks for a new
    # assignment), and says once where they are and what fixes them.
    with caplog.at_level(logging.ERROR):
        result = backend.heartbeat(
            "a", traits=TRAITS, info={}, expiry=3.0, seen_assignment_version=-1
        )
    assert result.slots is not None and result.partitions is None
    said = [r.getMessage() for r in caplog.records]
    assert any(where in m and "process-balancer repair" in m for m in said)
    problems = backend.inspect().problems
    assert [p.part for p in problems] == ["partitions"]
    assert where in problems[0].where

    dry = backend.repair(apply=False)
    assert any(where in action and "new generation" in action for action in dry.actions)
    assert db.execute("SELECT partitions FROM pb_groups").fetchone() == ('{"j": [1]}',)
    report = backend.repair(apply=True)
    assert report.counts == {"j": 3}
    assert db.execute("SELECT partitions FROM pb_groups").fetchone() == (None,)
    assert backend.inspect().problems == []
    assert backend.get_count("j") == 3

    beat(backend, "a")
    version = backend.snapshot().version
    assert backend.write_assignment(version, {"a": {"j": (0,)}}, {}, {"j": Partition(1, 5)})
    assert backend.snapshot().partitions == {"j": Partition(1, 5)}


def test_repair_keeps_readable_partitions_and_every_gate(
    backend: SQLiteBackend, db: sqlite3.Connection
) -> None:
    beat(backend, "a")
    version = backend.snapshot().version
    assert backend.write_assignment(version, {"a": {"j": (0,)}}, {}, {"j": Partition(1, 2)})
    assert backend.lock_acquire("j:0", "a", 30, gate=Gate("j", 2)) is not None
    gates = db.execute("SELECT * FROM pb_gates").fetchall()
    assert gates == [("ns", "j", 2, 0.0, '["j:0"]')]
    backend.repair(apply=True)
    assert backend.snapshot().partitions == {"j": Partition(1, 2)}
    assert db.execute("SELECT * FROM pb_gates").fetchall() == gates


def test_an_unreadable_gate_row_is_logged_once_by_name_and_replaced(
    backend: SQLiteBackend, db: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    beat(backend, "a")
    version = backend.snapshot().version
    assert backend.write_assignment(version, {}, {}, {"j": Partition(2, 1)})
    db.execute("INSERT INTO pb_gates VALUES ('ns', 'j', 1, 0, '[1, 2]')")
    assert backend.lock_acquire("j:0", "a", 5, gate=Gate("j", 1)) is None
    assert backend.lock_acquire("j:0", "a", 5, gate=Gate("j", 1)) is None
    lines = [r.getMessage() for r in caplog.records if "pb_gates, job 'j'" in r.getMessage()]
    assert len(lines) == 1 and "not a gate this program wrote" in lines[0]
    ((generation, blocked_until, names),) = db.execute(
        "SELECT generation, blocked_until, names FROM pb_gates"
    ).fetchall()
    assert generation == 0 and names == "[]" and blocked_until > time.time()


def test_a_file_from_before_partitions_keeps_working(tmp_path: Path) -> None:
    """Given a file written before partitions and gates existed (no partitions column, no
    pb_gates table, locks without an incarnation), when a backend of this version opens it,
    then the stored assignment is read with no partitions and everything new works."""
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(str(path), isolation_level=None)
    old.executescript(
        """
        CREATE TABLE pb_groups (namespace TEXT PRIMARY KEY, version INTEGER NOT NULL DEFAULT 0,
            assignment_version INTEGER NOT NULL DEFAULT 0, unplaced TEXT NOT NULL DEFAULT '{}');
        CREATE TABLE pb_assignment (namespace TEXT NOT NULL, identity TEXT NOT NULL,
            slots TEXT NOT NULL, PRIMARY KEY (namespace, identity));
        CREATE TABLE pb_locks (namespace TEXT NOT NULL, name TEXT NOT NULL, token TEXT,
            fence INTEGER NOT NULL, holder TEXT, expires_at REAL NOT NULL,
            PRIMARY KEY (namespace, name));
        INSERT INTO pb_groups VALUES ('ns', 5, 5, '{}');
        INSERT INTO pb_assignment VALUES ('ns', 'a', '{"j": [0, 1]}');
        """
    )
    old.close()
    backend = SQLiteBackend(f"sqlite:///{path}", "ns")
    try:
        result = backend.heartbeat(
            "a", traits=TRAITS, info={}, expiry=3.0, seen_assignment_version=-1
        )
        assert result.slots == {"j": (0, 1)} and result.partitions == {}
        assert backend.snapshot().partitions == {}
        assert backend.inspect().problems == []
        version = backend.snapshot().version
        assert backend.write_assignment(version, {"a": {"j": (0,)}}, {}, {"j": Partition(1, 1)})
        assert backend.lock_acquire("j:0", "a", 5, gate=Gate("j", 1)) is not None
        assert backend.snapshot().partitions == {"j": Partition(1, 1)}
    finally:
        backend.close()
    check = sqlite3.connect(str(path))
    try:
        columns = {row[1] for row in check.execute("PRAGMA table_info(pb_groups)")}
        tables = {row[0] for row in check.execute("SELECT name FROM sqlite_master")}
    finally:
        check.close()
    assert "partitions" in columns and "pb_gates" in tables
