"""The upgrade of a version-4 PostgreSQL schema to the one where ``pb_set_count`` can leave a
paused job as it is: the groups' counts and pauses are kept, and version 4's signature of
``pb_set_count`` still works as it did (a client of that version ends a pause by setting a
count)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from process_balancer.backends.postgres import SCHEMA_VERSION, PostgresBackend
from support.cli import pb

TRAITS = {"capacity": 4, "active": True, "jobs": ["j", "k"], "defaults": {"j": 2, "k": 2}}
V4_SCHEMA = Path(__file__).parent.parent / "support" / "postgres_schema_v4.sql"


@pytest.fixture
def db(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        yield conn


def install_version_4(db: psycopg.Connection[Any], schema: str) -> None:
    """The tables and functions as version 4 of this program created them."""
    text = V4_SCHEMA.read_text().replace("{schema}", f'"{schema}"').replace("{version}", "4")
    db.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    db.execute(text)


def test_a_version_4_schema_is_upgraded_in_place_and_keeps_counts_and_pauses(
    postgresql_backend_url: str, postgres_schema: str, namespace: str, db: Any
) -> None:
    install_version_4(db, postgres_schema)
    s = f'"{postgres_schema}"'
    # A group as version 4's functions leave it: a member, a count, a paused job.
    db.execute(
        f"SELECT * FROM {s}.pb_heartbeat(%s, 'a', %s::jsonb, '{{}}', 30000, -1, 'c', 100, 0, "
        "'', 0)",
        (namespace, json.dumps(TRAITS)),
    )
    set_v4 = f"SELECT * FROM {s}.pb_set_count(%s, %s, 'to', %s, '2', 'c', '10')"
    assert db.execute(set_v4, (namespace, "j", "3")).fetchone() == (1, "3", 10)
    assert db.execute(set_v4, (namespace, "k", "4")).fetchone() == (1, "4", 10)
    paused = db.execute(f"SELECT * FROM {s}.pb_pause(%s, 'k', '2', 'c', '10')", (namespace,))
    assert paused.fetchone() == (1, "4", 10)

    upgraded = pb("migrate", "--backend", postgresql_backend_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"from version 4 to {SCHEMA_VERSION}" in upgraded.stdout
    assert db.execute(f"SELECT version FROM {s}.pb_schema").fetchone() == (SCHEMA_VERSION,)
    # Both signatures of pb_set_count: version 4's (7 arguments) and the new one (8).
    arities = db.execute(
        "SELECT p.pronargs FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s AND p.proname = 'pb_set_count' ORDER BY 1",
        (postgres_schema,),
    ).fetchall()
    assert arities == [(7,), (8,)]

    backend = PostgresBackend(postgresql_backend_url, namespace)
    try:
        assert backend.snapshot().counts == {"j": 3, "k": 0}
        assert backend.paused_counts() == {"k": 4}
        version = backend.snapshot().version
        assert backend.set_count_unless_paused("k", to=6, by=None, default=2) is None
        assert backend.paused_counts() == {"k": 4}
        assert backend.snapshot().version == version
        assert backend.set_count_unless_paused("j", to=5, by=None, default=2) == 5
        # A client of version 4 still sets counts with its signature, and ends a pause.
        assert db.execute(set_v4, (namespace, "k", "1")).fetchone() == (1, "1", 10)
        assert backend.paused_counts() == {}
        assert backend.snapshot().counts == {"j": 5, "k": 1}
        # Its refusals are as they were.
        assert db.execute(set_v4, (namespace, "k", "11")).fetchone() == (-2, "11", 10)
    finally:
        backend.close()
