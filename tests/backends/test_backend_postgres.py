"""What is particular to the PostgreSQL backend: its tables and their creation, the messages
for a bad URL or a role without rights, data it finds that it did not write, and the
LISTEN/NOTIFY wake-ups. Every test has a schema of its own (see ``postgres_schema``)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from process_balancer.backends import CorruptStateError, open_backend
from process_balancer.backends.postgres import (
    SCHEMA_VERSION,
    PostgresBackend,
    channel_name,
    parse_url,
)
from support.cli import pb
from support.harness import wait_until

TRAITS = {"capacity": 4, "active": True, "jobs": ["j"], "defaults": {"j": 2}, "started_at": 1.0}


@pytest.fixture
def backend(postgresql_backend_url: str, namespace: str) -> Iterator[PostgresBackend]:
    b = PostgresBackend(postgresql_backend_url, namespace)
    yield b
    b.close()


@pytest.fixture
def db(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def bare_role(postgres_url: str) -> Iterator[str]:
    """A login role with no rights beyond connecting; dropped afterwards."""
    role = f"pbt_role_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        try:
            yield role
        finally:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


def beat(backend: PostgresBackend, identity: str, seen: int = -1) -> Any:
    return backend.heartbeat(
        identity, traits=TRAITS, info={"x": 1}, expiry=3.0, seen_assignment_version=seen
    )


def tables(db: psycopg.Connection[Any], schema: str) -> list[str]:
    rows = db.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
        "ORDER BY table_name",
        (schema,),
    ).fetchall()
    return [row[0] for row in rows]


def as_role(url: str, role: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://{role}@", 1)


# -- tables ---------------------------------------------------------------------------------------


def test_the_first_open_creates_the_tables_and_says_so(
    postgresql_backend_url: str, postgres_schema: str, namespace: str, db, caplog
) -> None:
    with caplog.at_level(logging.INFO):
        open_backend(postgresql_backend_url, namespace).close()
    assert "pb_members" in tables(db, postgres_schema)
    assert f"created the process-balancer tables in schema {postgres_schema!r}" in caplog.text


def test_migrate_creates_the_tables_once_and_is_idempotent(
    postgresql_backend_url: str, postgres_schema: str, db
) -> None:
    first = pb("migrate", "--backend", postgresql_backend_url)
    assert first.returncode == 0, first.stderr
    assert "created the process-balancer tables" in first.stdout
    created = tables(db, postgres_schema)
    assert {"pb_members", "pb_groups", "pb_locks", "pb_advisory_fences"} <= set(created)
    again = pb("migrate", "--backend", postgresql_backend_url)
    assert again.returncode == 0, again.stderr
    assert f"up to date (version {SCHEMA_VERSION}); nothing to do" in again.stdout
    assert tables(db, postgres_schema) == created


def test_tables_of_version_1_get_the_current_functions_on_the_next_start(
    postgresql_backend_url: str, postgres_schema: str, namespace: str, db, caplog
) -> None:
    """Functions are replaced only when the stored version is older than this release's:
    version 1 had the pb_heartbeat that could deadlock, so it must be upgraded."""
    assert pb("migrate", "--backend", postgresql_backend_url).returncode == 0
    (signature,) = db.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n "
        "ON n.oid = p.pronamespace WHERE n.nspname = %s AND p.proname = 'pb_heartbeat'",
        (postgres_schema,),
    ).fetchone()
    db.execute(f"DROP FUNCTION {signature}")  # stands for version 1's pb_heartbeat
    db.execute(f"UPDATE {postgres_schema}.pb_schema SET version = 1")
    with caplog.at_level(logging.INFO):
        backend = PostgresBackend(postgresql_backend_url, namespace)
    try:
        assert beat(backend, "a").joined
    finally:
        backend.close()
    assert f"from version 1 to {SCHEMA_VERSION}" in caplog.text
    assert db.execute(f"SELECT version FROM {postgres_schema}.pb_schema").fetchone() == (
        SCHEMA_VERSION,
    )


def test_groups_in_different_namespaces_share_the_tables_but_not_their_rows(
    postgresql_backend_url: str,
) -> None:
    a = PostgresBackend(postgresql_backend_url, "group-a")
    b = PostgresBackend(postgresql_backend_url, "group-b")
    try:
        beat(a, "p1")
        b.set_count("j", to=7, by=None, default=1)
        assert [m.identity for m in a.snapshot().members] == ["p1"]
        assert b.snapshot().members == []
        assert a.get_count("j") is None and b.get_count("j") == 7
    finally:
        a.close()
        b.close()


def test_the_schema_parameter_is_not_passed_to_libpq() -> None:
    target = parse_url("postgresql://u:pw@db:5433/app?sslmode=disable&schema=jobs")
    assert target.schema == "jobs"
    assert target.conninfo == "postgresql://u:pw@db:5433/app?sslmode=disable"
    assert parse_url("postgres://db/app").schema == "process_balancer"
    options = parse_url("postgresql://db/app?options=-c%20statement_timeout%3D500&schema=s")
    assert options.conninfo == "postgresql://db/app?options=-c%20statement_timeout%3D500"


# -- bad input ------------------------------------------------------------------------------------


def test_an_unreachable_server_is_one_line_and_exit_1() -> None:
    result = pb("status", "--backend", "postgresql://postgres@127.0.0.1:1/test")
    assert result.returncode == 1
    assert result.stderr.startswith("process-balancer: cannot connect to PostgreSQL at ")
    assert "check the host, port" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_missing_database_is_named() -> None:
    result = pb("migrate", "--backend", "postgresql://postgres@127.0.0.1:5432/pbt_no_such_db")
    assert result.returncode == 1
    assert 'database "pbt_no_such_db" does not exist' in result.stderr
    assert "Traceback" not in result.stderr


def test_an_invalid_schema_name_exits_2() -> None:
    result = pb("migrate", "--backend", "postgresql://postgres@127.0.0.1:5432/test?schema=a;b")
    assert result.returncode == 2
    assert "invalid schema 'a;b'" in result.stderr


def test_a_role_that_may_not_create_the_schema_gets_what_to_grant_and_nothing_is_created(
    postgresql_backend_url: str, postgres_schema: str, bare_role: str, db
) -> None:
    result = pb("migrate", "--backend", as_role(postgresql_backend_url, bare_role))
    assert result.returncode == 1
    assert f"role {bare_role!r} may not create the process-balancer tables" in result.stderr
    assert "nothing was created" in result.stderr and "Grant it CREATE" in result.stderr
    found = db.execute(
        "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (postgres_schema,)
    ).fetchone()
    assert found == (0,)


def test_a_role_without_rights_on_existing_tables_is_told_the_grant(
    postgresql_backend_url: str, postgres_schema: str, bare_role: str, db
) -> None:
    assert pb("migrate", "--backend", postgresql_backend_url).returncode == 0
    url = as_role(postgresql_backend_url, bare_role)
    no_usage = pb("status", "--backend", url)
    assert no_usage.returncode == 1
    assert f'GRANT USAGE ON SCHEMA "{postgres_schema}" TO {bare_role}' in no_usage.stderr
    db.execute(f'GRANT USAGE ON SCHEMA "{postgres_schema}" TO "{bare_role}"')
    no_tables = pb("status", "--backend", url)
    assert no_tables.returncode == 1
    assert "lacks rights on pb_schema, pb_groups" in no_tables.stderr
    assert "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES" in no_tables.stderr
    db.execute(
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{postgres_schema}" '
        f'TO "{bare_role}"; GRANT USAGE ON ALL SEQUENCES IN SCHEMA "{postgres_schema}" '
        f'TO "{bare_role}"'
    )
    granted = pb("status", "--json", "--backend", url)
    assert granted.returncode == 0, granted.stderr


def test_migrate_has_help_naming_the_group_options() -> None:
    result = pb("migrate", "--help")
    assert result.returncode == 0
    assert "--backend URL" in result.stdout and "-c, --config" in result.stdout
    assert "?schema=" in result.stdout


def test_migrate_on_a_redis_backend_has_nothing_to_do(redis_url: str) -> None:
    result = pb("migrate", "--backend", redis_url)
    assert result.returncode == 0
    assert "has no tables to migrate; nothing to do" in result.stdout


# -- data it did not write ------------------------------------------------------------------------


def test_unreadable_traits_are_reported_with_their_row_and_kept(
    backend: PostgresBackend, db, postgres_schema: str, namespace: str
) -> None:
    beat(backend, "a")
    db.execute(
        f"UPDATE {postgres_schema}.pb_members SET traits = '[1, 2]' "
        "WHERE namespace = %s AND identity = 'a'",
        (namespace,),
    )
    with pytest.raises(CorruptStateError, match=r"pb_members\[.*/a\]\.traits.*expected a JSON"):
        backend.snapshot()
    row = db.execute(
        f"SELECT traits::text FROM {postgres_schema}.pb_members WHERE namespace = %s",
        (namespace,),
    ).fetchone()
    assert row == ("[1, 2]",)


def test_an_unreadable_assignment_row_is_reported_and_kept(
    backend: PostgresBackend, db, postgres_schema: str, namespace: str
) -> None:
    backend.write_assignment(beat(backend, "a").version, {"a": {"j": (0,)}}, {})
    db.execute(
        f"""UPDATE {postgres_schema}.pb_assignments SET slots = '{{"j": ["x"]}}' """
        "WHERE namespace = %s",
        (namespace,),
    )
    with pytest.raises(CorruptStateError, match=r"pb_assignments\[.*/a\] lists \['x'\]"):
        beat(backend, "a")
    assert db.execute(
        f"SELECT count(*) FROM {postgres_schema}.pb_assignments WHERE namespace = %s",
        (namespace,),
    ).fetchone() == (1,)


def test_a_command_that_is_not_an_object_is_skipped(
    backend: PostgresBackend, db, postgres_schema: str, namespace: str, caplog
) -> None:
    beat(backend, "a")
    db.execute(
        f"INSERT INTO {postgres_schema}.pb_commands (namespace, identity, command, expires_at) "
        "VALUES (%s, 'a', '\"quiet\"', now() + interval '1 minute')",
        (namespace,),
    )
    backend.send_command("a", {"command": "stop"})
    assert beat(backend, "a").commands == [{"command": "stop"}]
    assert "ignoring unreadable remote command 'quiet'" in caplog.text


def test_acks_are_recorded_per_command(backend: PostgresBackend) -> None:
    backend.ack_command("a:1:x", "c1", 123.5)
    backend.ack_command("b:2:y", "c1", 124.0)
    backend.ack_command("a:1:x", "c2", 125.0)
    assert backend.command_acks("c1") == {"a:1:x": 123.5, "b:2:y": 124.0}
    assert backend.command_acks("nothing") == {}


# -- LISTEN/NOTIFY --------------------------------------------------------------------------------


def test_listen_delivers_every_group_event_and_honours_stop(
    backend: PostgresBackend, postgresql_backend_url: str, namespace: str
) -> None:
    events: list[str] = []
    stop = threading.Event()
    listener = threading.Thread(target=backend.listen, args=(events.append, stop), daemon=True)
    listener.start()
    wait_until(lambda: "subscribed" in events, 5, message="the listener to subscribe")
    other = PostgresBackend(postgresql_backend_url, namespace)
    try:
        version = beat(other, "a").version
        other.write_assignment(version, {"a": {"j": (0,)}}, {})
        other.send_command("a", {"command": "dump"})
        lock = other.lock_acquire("j:0", "a", 5)
        assert lock is not None
        other.lock_release("j:0", lock.token)
    finally:
        other.close()
    expected = ["state", "assignment", "command a", "released j:0"]
    wait_until(lambda: events[1:] == expected, 5, message=f"events {expected}, got {events}")
    stopped_at = time.monotonic()
    stop.set()
    listener.join(5)
    assert not listener.is_alive() and time.monotonic() - stopped_at < 1.5


def test_groups_are_notified_on_channels_of_their_own() -> None:
    assert channel_name("process_balancer", "a") != channel_name("process_balancer", "b")
    assert channel_name("s1", "a") != channel_name("s2", "a")
    assert len(channel_name("s" * 60, "n" * 60).encode()) <= 63


# -- the backend's own lease lock, with real processes ---------------------------------------------


@pytest.mark.backends("postgresql")
def test_a_lost_lease_lock_stops_the_iteration_and_unlock_records_runs(
    group_config, spawn, iteration_log, db, postgres_schema: str, namespace: str
) -> None:
    """Given a process inside a long iteration of slot q:0, when its lock row is taken away,
    then the renewal fails and the iteration stops early, with unlock_records run."""
    job = {"class": "support.jobs:RecordingJob", "records": 200, "record_time": 0.05}
    config = group_config({"q": {**job, "workers": 1, "runtime_lock_timeout": 1.5}})
    a = spawn(config, "a")
    wait_until(lambda: iteration_log.events(), 15, message="a running")
    time.sleep(0.2)
    db.execute(
        f"UPDATE {postgres_schema}.pb_locks SET token = 'someone-else' "
        "WHERE namespace = %s AND name = 'q:0'",
        (namespace,),
    )
    taken_at = time.time()
    first = wait_until(
        lambda: [i for i in iteration_log.intervals() if i.closed], 10, message="the end"
    )[0]
    assert first.done is not None and first.done < 200
    assert first.end - taken_at < 2.0
    assert "lost its worker lock" in a.log()


# -- concurrency ----------------------------------------------------------------------------------


def test_two_expired_members_heartbeating_at_once_prune_each_other_without_a_deadlock(
    postgresql_backend_url: str, postgres_schema: str, namespace: str, db
) -> None:
    """Given members a and b, both expired, when both heartbeat at once and each heartbeat's
    prune is slowed down (a trigger sleeps on every deleted member row) so that each one
    prunes the other before locking its own row, then both heartbeats succeed and both rejoin.
    A heartbeat that pruned before locking its own row waited for the peer holding that row
    while the peer waited for the row it had just deleted: `deadlock detected`."""
    a = PostgresBackend(postgresql_backend_url, namespace)
    b = PostgresBackend(postgresql_backend_url, namespace)
    try:
        for backend, identity in ((a, "a"), (b, "b")):
            backend.heartbeat(
                identity, traits=TRAITS, info={}, expiry=0.01, seen_assignment_version=-1
            )
        time.sleep(0.05)
        db.execute(
            f"CREATE FUNCTION {postgres_schema}.slow_delete() RETURNS trigger LANGUAGE plpgsql "
            "AS $$ BEGIN PERFORM pg_sleep(0.4); RETURN OLD; END $$; "
            f"CREATE TRIGGER slow_delete AFTER DELETE ON {postgres_schema}.pb_members "
            f"FOR EACH ROW EXECUTE FUNCTION {postgres_schema}.slow_delete()"
        )
        results: dict[str, Any] = {}

        def beat_as(backend: PostgresBackend, identity: str) -> None:
            try:
                results[identity] = beat(backend, identity)
            except Exception as exc:
                results[identity] = exc

        threads = [
            threading.Thread(target=beat_as, args=(a, "a")),
            threading.Thread(target=beat_as, args=(b, "b")),
        ]
        threads[0].start()
        time.sleep(0.1)  # inside a's slowed prune
        threads[1].start()
        for thread in threads:
            thread.join(10)
    finally:
        a.close()
        b.close()
    assert not isinstance(results["a"], Exception), results["a"]
    assert not isinstance(results["b"], Exception), results["b"]
    assert results["a"].joined and results["b"].joined
    members = db.execute(
        f"SELECT identity FROM {postgres_schema}.pb_members WHERE namespace = %s ORDER BY identity",
        (namespace,),
    ).fetchall()
    assert members == [("a",), ("b",)]


# -- the worker-count ceiling in the functions themselves ---------------------------------------


@pytest.mark.parametrize(
    "value", ["1e3", "0x10", " 5", "5 ", "+5", "5.0", "NaN", "Infinity", "", "99999999999999999999"]
)
def test_the_count_functions_refuse_what_is_not_a_decimal_integer(
    backend: PostgresBackend, db, postgres_schema: str, value: str
) -> None:
    """Whatever a client sends, only the decimal digits of a count in range are stored."""
    call = f'SELECT * FROM "{postgres_schema}".pb_set_count(%s, %s, %s, %s, %s, %s, %s)'
    for mode, default in (("to", "1"), ("by", "1"), ("by", value)):
        argument = value if default != value else "1"
        status, _, ceiling = db.execute(
            call, (backend.namespace, "j", mode, argument, default, "c", "10")
        ).fetchone()
        assert (status, ceiling) == (-3 if default == value else -2, 10)
    status, _, _ = db.execute(
        f'SELECT * FROM "{postgres_schema}".pb_pause(%s, %s, %s, %s, %s)',
        (backend.namespace, "j", value, "c", "10"),
    ).fetchone()
    assert status == -3
    assert db.execute(f'SELECT count(*) FROM "{postgres_schema}".pb_counts').fetchone() == (0,)


def test_the_function_ceiling_is_never_above_the_hard_limit(
    backend: PostgresBackend, db, postgres_schema: str
) -> None:
    call = f'SELECT * FROM "{postgres_schema}".pb_set_count(%s, %s, %s, %s, %s, %s, %s)'
    for maximum in ("99999999", "-1", "lots", None):
        row = db.execute(call, (backend.namespace, "j", "to", "1000001", "1", "c", maximum))
        assert row.fetchone() == (-2, "1000001", 1_000_000)
    assert backend.get_count("j") is None


def test_an_upgrade_drops_the_count_functions_without_a_ceiling(
    postgresql_backend_url: str, postgres_schema: str, db
) -> None:
    assert pb("migrate", "--backend", postgresql_backend_url).returncode == 0
    s = f'"{postgres_schema}"'
    db.execute(
        f"CREATE FUNCTION {s}.pb_set_count(text, text, text, bigint, bigint, text, "
        "OUT o_status integer, OUT o_value bigint) LANGUAGE sql AS 'SELECT 1, 1::bigint'"
    )
    db.execute(f"UPDATE {s}.pb_schema SET version = 1")
    upgraded = pb("migrate", "--backend", postgresql_backend_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"from version 1 to {SCHEMA_VERSION}" in upgraded.stdout
    signatures = db.execute(
        "SELECT pg_get_function_identity_arguments(p.oid) FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s AND p.proname = 'pb_set_count'",
        (postgres_schema,),
    ).fetchall()
    # Left: version 4's signature (kept for its clients) and the one with p_unless_paused.
    assert len(signatures) == 2, signatures
    assert all("p_max text" in signature for (signature,) in signatures)
    assert sum("p_unless_paused boolean" in signature for (signature,) in signatures) == 1


def test_a_state_restored_from_another_server_grants_no_lock_before_a_new_incarnation(
    backend: PostgresBackend, db, postgres_schema: str, namespace: str
) -> None:
    # As after a restore from a backup (or a failover): the rows name the server that began
    # the incarnation, and a's membership in them has long expired while "a" still runs j:0.
    # Nothing may be granted before a heartbeat has begun a new incarnation and held it.
    first = beat(backend, "a")
    beat(backend, "b")
    held = backend.lock_acquire("j:0", "a", 30.0)
    assert held is not None
    db.execute(
        f"UPDATE {postgres_schema}.pb_groups SET incarnation_server = 'another server' "
        "WHERE namespace = %s",
        (namespace,),
    )
    db.execute(
        f"UPDATE {postgres_schema}.pb_members SET deadline = now() - interval '1 minute' "
        "WHERE namespace = %s AND identity = 'a'",
        (namespace,),
    )
    assert backend.lock_acquire("j:0", "b", 30.0) is None
    after = backend.heartbeat(
        "b",
        traits=TRAITS,
        info={},
        expiry=30,
        seen_assignment_version=-1,
        known_incarnation=first.incarnation,
        hold=0.5,
    )
    assert "server changed" in after.new_incarnation
    assert backend.lock_acquire("j:0", "b", 30.0) is None
    time.sleep(0.6)
    taken = backend.lock_acquire("j:0", "b", 30.0)
    assert taken is not None and taken.fence > held.fence
