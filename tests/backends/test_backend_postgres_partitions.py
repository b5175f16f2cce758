"""Partitioned jobs in the PostgreSQL backend: the partitions column of ``pb_groups`` and the
``pb_gates`` rows when they hold what this program did not write, and the upgrade of a
version-3 schema (before either existed) that keeps the groups' data."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from process_balancer.backends import Gate, Partition
from process_balancer.backends.postgres import SCHEMA_VERSION, PostgresBackend
from support.cli import pb

TRAITS = {"capacity": 4, "active": True, "jobs": ["j"], "defaults": {"j": 2}, "started_at": 1.0}
V3_SCHEMA = Path(__file__).parent.parent / "support" / "postgres_schema_v3.sql"


@pytest.fixture
def backend(postgresql_backend_url: str, namespace: str) -> Iterator[PostgresBackend]:
    b = PostgresBackend(postgresql_backend_url, namespace)
    yield b
    b.close()


@pytest.fixture
def db(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        yield conn


def beat(backend: PostgresBackend, identity: str = "a", traits: Any = TRAITS) -> Any:
    return backend.heartbeat(
        identity, traits=traits, info={}, expiry=3.0, seen_assignment_version=-1
    )


def assign(backend: PostgresBackend, partitions: dict[str, Partition]) -> None:
    """A new state version (a changed trait), then an assignment with ``partitions``."""
    version = beat(backend, traits={**TRAITS, "started_at": time.time()}).version
    assert backend.write_assignment(version, {"a": {"j": (0, 1)}}, {}, partitions)


def test_unreadable_partitions_are_named_refuse_gated_locks_and_repair_removes_them(
    backend: PostgresBackend, db, postgres_schema: str, namespace: str, caplog
) -> None:
    backend.set_count("j", to=2, by=None, default=2)
    assign(backend, {"j": Partition(2, 5)})
    assert backend.lock_acquire("j:0", "a", 30, gate=Gate("j", 5)) is not None
    db.execute(
        f"""UPDATE "{postgres_schema}".pb_groups SET partitions = '{{"j": [2]}}' """
        "WHERE namespace = %s",
        (namespace,),
    )
    where = rf"{postgres_schema}\.pb_groups\[{namespace}\]\.partitions"
    # The heartbeat goes on, its slots without partitions (the runner then asks for a new
    # assignment), and says once where they are and what fixes them.
    with caplog.at_level(logging.ERROR):
        result = beat(backend)
    assert result.slots is not None and result.partitions is None
    said = [r.getMessage() for r in caplog.records]
    assert any(re.search(rf"{where} gives \[2\].*process-balancer repair", m) for m in said)
    caplog.clear()
    problems = backend.inspect().problems
    assert [p.part for p in problems] == ["partitions"]
    # No lock of a partitioned job is granted meanwhile; said once, with where and the fix.
    with caplog.at_level(logging.ERROR):
        assert backend.lock_acquire("j:1", "a", 30, gate=Gate("j", 5)) is None
        assert backend.lock_acquire("j:1", "a", 30, gate=Gate("j", 5)) is None
    lines = [r.getMessage() for r in caplog.records if "partitions" in r.getMessage()]
    assert len(lines) == 1 and "process-balancer repair" in lines[0]
    gates = f'SELECT generation, names FROM "{postgres_schema}".pb_gates WHERE namespace = %s'
    gate_before = db.execute(gates, (namespace,)).fetchall()

    report = backend.repair(apply=True)
    assert any(
        "partitions: removed" in line and "starts each job at a new generation" in line
        for line in report.actions
    )
    assert report.counts == {"j": 2}
    assert backend.inspect().problems == []
    assert backend.snapshot().partitions == {}
    assert backend.get_count("j") == 2
    # Gates are lock state: repair leaves them alone.
    assert db.execute(gates, (namespace,)).fetchall() == gate_before
    assign(backend, {"j": Partition(2, 6)})
    assert beat(backend).partitions == {"j": Partition(2, 6)}


def test_repair_keeps_readable_partitions(backend: PostgresBackend) -> None:
    assign(backend, {"j": Partition(3, 9)})
    report = backend.repair(apply=True)
    assert not any("partitions" in line for line in report.actions)
    assert backend.snapshot().partitions == {"j": Partition(3, 9)}


@pytest.mark.parametrize(
    ("generation", "names"),
    [("NULL", "'[]'"), ("1", "'[\"j:0\", 7]'"), ("1", "'{\"j:0\": 1}'"), ("1", "NULL")],
)
def test_a_gate_row_in_any_unreadable_shape_is_replaced_by_a_blocked_one(
    backend: PostgresBackend, db, postgres_schema: str, namespace: str, generation, names, caplog
) -> None:
    beat(backend)
    assign(backend, {"j": Partition(2, 1)})
    held = backend.lock_acquire("j:0", "a", 0.3, gate=Gate("j", 1))
    assert held is not None
    db.execute(
        f'UPDATE "{postgres_schema}".pb_gates SET generation = {generation}, names = {names} '
        "WHERE namespace = %s AND job_id = 'j'",
        (namespace,),
    )
    assert not backend.lock_renew("j:0", held.token, 0.3, gate=Gate("j", 1))
    with caplog.at_level(logging.ERROR):
        assert backend.lock_acquire("j:1", "a", 0.3, gate=Gate("j", 1)) is None
    assert f"pb_gates[{namespace}/j] holds generation" in caplog.text
    row = db.execute(
        f'SELECT generation, names, blocked_until > now() FROM "{postgres_schema}".pb_gates '
        "WHERE namespace = %s AND job_id = 'j'",
        (namespace,),
    ).fetchone()
    assert row == (0, [], True)
    time.sleep(0.35)
    assert backend.lock_acquire("j:1", "a", 0.3, gate=Gate("j", 1)) is not None


# -- the upgrade from version 3 -------------------------------------------------------------------


def install_version_3(db: psycopg.Connection[Any], schema: str) -> None:
    """The tables and functions as version 3 of this program created them."""
    text = V3_SCHEMA.read_text().replace("{schema}", f'"{schema}"').replace("{version}", "3")
    db.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    db.execute(text)


def test_a_version_3_schema_is_upgraded_in_place_and_keeps_its_groups(
    postgresql_backend_url: str, postgres_schema: str, namespace: str, db
) -> None:
    install_version_3(db, postgres_schema)
    s = f'"{postgres_schema}"'
    traits = json.dumps(TRAITS)
    # A group as version 3's functions leave it: two members, an assignment, a count, a lock.
    for identity in ("a", "b"):
        db.execute(
            f"SELECT * FROM {s}.pb_heartbeat(%s, %s, %s::jsonb, '{{}}', 30000, -1, 'c', 100, 0, "
            "'', 0)",
            (namespace, identity, traits),
        )
    db.execute(f"SELECT * FROM {s}.pb_set_count(%s, 'j', 'to', '3', '2', 'c', NULL)", (namespace,))
    (version,) = db.execute(
        f"SELECT version FROM {s}.pb_groups WHERE namespace = %s", (namespace,)
    ).fetchone()
    written = db.execute(
        f"SELECT {s}.pb_write_assignment(%s, %s, %s::jsonb, '{{}}', 'c')",
        (namespace, version, '{"a": {"j": [0, 1]}, "b": {"j": [2]}}'),
    ).fetchone()
    assert written == (True,)
    (status, fence, _) = db.execute(
        f"SELECT * FROM {s}.pb_lock_acquire(%s, 'j:0', 'tok', 'a', 30000, 0)", (namespace,)
    ).fetchone()
    assert status == 1

    upgraded = pb("migrate", "--backend", postgresql_backend_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"from version 3 to {SCHEMA_VERSION}" in upgraded.stdout
    assert db.execute(f"SELECT version FROM {s}.pb_schema").fetchone() == (SCHEMA_VERSION,)
    # Only the new signatures are left for a client to call.
    signatures = db.execute(
        "SELECT p.proname, count(*) FROM pg_proc p JOIN pg_namespace n "
        "ON n.oid = p.pronamespace WHERE n.nspname = %s AND p.proname IN "
        "('pb_heartbeat', 'pb_write_assignment', 'pb_lock_acquire', 'pb_lock_renew') "
        "GROUP BY p.proname",
        (postgres_schema,),
    ).fetchall()
    assert sorted(signatures) == [
        ("pb_heartbeat", 1),
        ("pb_lock_acquire", 1),
        ("pb_lock_renew", 1),
        ("pb_write_assignment", 1),
    ]

    backend = PostgresBackend(postgresql_backend_url, namespace)
    try:
        snapshot = backend.snapshot()
        assert [m.identity for m in snapshot.members] == ["a", "b"]
        assert snapshot.counts == {"j": 3}
        assert snapshot.assignment == {"a": {"j": [0, 1]}, "b": {"j": [2]}}
        assert snapshot.partitions == {}
        result = beat(backend, "b")
        assert result.slots == {"j": (2,)} and result.partitions == {}
        # The lock taken before the upgrade is still a's, with its fence.
        assert backend.lock_acquire("j:0", "b", 30) is None
        assert backend.lock_renew("j:0", "tok", 30)
        again = backend.lock_acquire("j:0", "a", 30)
        assert again is not None and again.fence > fence
        # And the new behaviour works on the upgraded tables.
        assign(backend, {"j": Partition(3, 1)})
        assert backend.lock_acquire("j:1", "b", 30, gate=Gate("j", 1)) is not None
    finally:
        backend.close()
