"""Data in the backend that the runner did not write: every read of it is guarded.

Each case writes garbage into one key (Redis) or row (SQLite, PostgreSQL) of a group with a
member, a count, a pause, an assignment and an acknowledgement, then calls every operation a
process or an operator uses. An operation may succeed (ignoring what it cannot read) or raise
:class:`CorruptStateError` naming the key and the fix; nothing else may come out of it.
"""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import redis

from process_balancer.backends import (
    Backend,
    BackendError,
    CorruptStateError,
    GroupSnapshot,
    MemberState,
    open_backend,
)
from process_balancer.backends.sqlite.connection import sqlite_path
from process_balancer.balancing.rebalance import compute, effective_counts, rebalance
from process_balancer.config.defaults import MAX_WORKERS_HARD_LIMIT
from support.cli import pb
from support.harness import running_by_pid, settled, wait_until

TRAITS = {"capacity": 4, "active": True, "jobs": ["j"], "defaults": {"j": 2}, "started_at": 1.0}
REPAIR = "process-balancer repair"
SCALE = "process-balancer scale"


def beat(backend: Backend, identity: str = "a") -> Any:
    return backend.heartbeat(
        identity, traits=TRAITS, info={"x": 1}, expiry=3.0, seen_assignment_version=-1
    )


OPERATIONS: dict[str, Callable[[Backend], Any]] = {
    "heartbeat": beat,
    "snapshot": lambda b: b.snapshot(),
    "rebalance": rebalance,
    "change and rebalance": lambda b: (b.clear_count("other"), rebalance(b)),
    "get_count": lambda b: b.get_count("j"),
    "paused_counts": lambda b: b.paused_counts(),
    "unplaced": lambda b: b.unplaced(),
    "command_acks": lambda b: b.command_acks("c1"),
    "send_command": lambda b: b.send_command("a", {"command": "dump"}),
    "leave": lambda b: b.leave("gone"),
    "write_assignment": lambda b: b.write_assignment(10**6, {"a": {"j": (0,)}}, {}),
    "inspect": lambda b: b.inspect(),
}


def prepare(backend: Backend) -> None:
    """A group with member a, a runtime count for j, paused job p, an assignment, an ack."""
    beat(backend)
    backend.set_count("j", to=3, by=None, default=2)
    backend.set_count("p", to=2, by=None, default=1)
    backend.pause("p", default=1)
    rebalance(backend)
    beat(backend)
    backend.ack_command("a", "c1", 1.0)


@dataclass(frozen=True)
class Case:
    name: str
    corrupt: Callable[[Any], Any]  # given the raw connection of the backend kind
    where: str  # what every message about it must name
    fix: str = REPAIR

    def __str__(self) -> str:
        return self.name


# -- Redis -------------------------------------------------------------------------------------


def _redis_cases(ns: str) -> list[Case]:
    def set_key(key: str, value: str) -> Callable[[redis.Redis], Any]:
        return lambda r: (r.delete(f"{ns}:{key}"), r.set(f"{ns}:{key}", value))

    def hset(key: str, field: str, value: str) -> Callable[[redis.Redis], Any]:
        return lambda r: r.hset(f"{ns}:{key}", field, value)

    def as_hash(key: str) -> Callable[[redis.Redis], Any]:
        return lambda r: (r.delete(f"{ns}:{key}"), r.hset(f"{ns}:{key}", "x", "1"))

    def as_list(key: str) -> Callable[[redis.Redis], Any]:
        return lambda r: (r.delete(f"{ns}:{key}"), r.rpush(f"{ns}:{key}", "x"))

    return [
        Case("version-garbage", set_key("version", "garbage"), f"{ns}:version"),
        Case("version-float", set_key("version", "1.5"), f"{ns}:version"),
        Case("version-huge", set_key("version", "9" * 30), f"{ns}:version"),
        Case("version-hash", as_hash("version"), f"{ns}:version"),
        Case("av-garbage", set_key("assignment_version", "x"), f"{ns}:assignment_version"),
        Case("av-list", as_list("assignment_version"), f"{ns}:assignment_version"),
        Case("members-string", set_key("members", "x"), f"{ns}:members"),
        Case("traits-string", set_key("traits", "x"), f"{ns}:traits"),
        Case("traits-json", hset("traits", "a", "not json"), f"{ns}:traits"),
        Case("traits-array", hset("traits", "a", "[1]"), f"{ns}:traits"),
        Case("info-garbage", hset("info", "a", "x"), f"{ns}:info"),
        Case("info-list", as_list("info"), f"{ns}:info"),
        Case("count-negative", hset("counts", "j", "-3"), f"{ns}:counts", SCALE),
        Case("count-float", hset("counts", "j", "2.5"), f"{ns}:counts", SCALE),
        Case("count-huge", hset("counts", "j", "9" * 30), f"{ns}:counts", SCALE),
        Case("count-word", hset("counts", "j", "lots"), f"{ns}:counts", SCALE),
        Case("counts-string", set_key("counts", "x"), f"{ns}:counts"),
        Case("paused-garbage", hset("paused", "p", "x"), f"{ns}:paused", SCALE),
        Case("paused-string", set_key("paused", "x"), f"{ns}:paused"),
        Case("assignment-json", hset("assignment", "a", "[1"), f"{ns}:assignment"),
        Case("assignment-shape", hset("assignment", "a", '{"j": "x"}'), f"{ns}:assignment"),
        Case("assignment-string", set_key("assignment", "x"), f"{ns}:assignment"),
        Case("unplaced-garbage", set_key("unplaced", "x"), f"{ns}:unplaced"),
        Case("unplaced-shape", set_key("unplaced", '{"j": [true]}'), f"{ns}:unplaced"),
        Case("unplaced-hash", as_hash("unplaced"), f"{ns}:unplaced"),
        Case("partitions-garbage", set_key("partitions", "x"), f"{ns}:partitions"),
        Case("partitions-shape", set_key("partitions", '{"j": [1]}'), f"{ns}:partitions"),
        Case("partitions-hash", as_hash("partitions"), f"{ns}:partitions"),
        Case("commands-string", set_key("commands:a", "x"), f"{ns}:commands:a"),
        Case("acks-string", set_key("acks:c1", "x"), f"{ns}:acks:c1"),
    ]


# -- SQLite --------------------------------------------------------------------------------------


def _sqlite_cases(ns: str) -> list[Case]:
    def sql(statement: str, *params: Any) -> Callable[[sqlite3.Connection], Any]:
        return lambda conn: conn.execute(statement, params)

    groups = "UPDATE pb_groups SET {} = ? WHERE namespace = ?"
    members = "UPDATE pb_members SET {} = ? WHERE namespace = ? AND identity = 'a'"
    count = "UPDATE pb_counts SET count = ? WHERE namespace = ? AND job_id = 'j'"
    return [
        Case("version-garbage", sql(groups.format("version"), "garbage", ns), "version"),
        Case("version-float", sql(groups.format("version"), 2.5, ns), "version"),
        Case("version-huge", sql(groups.format("version"), 1e30, ns), "version"),
        Case("version-blob", sql(groups.format("version"), b"\x00", ns), "version"),
        Case("av-garbage", sql(groups.format("assignment_version"), "x", ns), "assignment_version"),
        Case("unplaced-garbage", sql(groups.format("unplaced"), "x", ns), "unplaced"),
        Case("unplaced-number", sql(groups.format("unplaced"), 7, ns), "unplaced"),
        Case("partitions-garbage", sql(groups.format("partitions"), "x", ns), "partitions"),
        Case("partitions-number", sql(groups.format("partitions"), 7, ns), "partitions"),
        Case(
            "partitions-shape",
            sql(groups.format("partitions"), '{"j": [1, 0]}', ns),
            "partitions",
        ),
        Case("traits-garbage", sql(members.format("traits"), "x", ns), "traits"),
        Case("traits-array", sql(members.format("traits"), "[1]", ns), "traits"),
        Case("info-number", sql(members.format("info"), 3, ns), "info"),
        Case("deadline-text", sql(members.format("deadline"), "soon", ns), "deadline"),
        Case("count-word", sql(count, "lots", ns), "pb_counts", SCALE),
        Case("count-negative", sql(count, -3, ns), "pb_counts", SCALE),
        Case("count-float", sql(count, 2.5, ns), "pb_counts", SCALE),
        Case("count-huge", sql(count, 10**12, ns), "pb_counts", SCALE),
        Case(
            "paused-garbage",
            sql("UPDATE pb_paused SET count = 'x' WHERE namespace = ?", ns),
            "pb_paused",
            SCALE,
        ),
        Case(
            "assignment-garbage",
            sql("UPDATE pb_assignment SET slots = 'x' WHERE namespace = ?", ns),
            "pb_assignment",
        ),
        Case(
            "acks-garbage",
            sql("UPDATE pb_acks SET at = 'x' WHERE namespace = ?", ns),
            "pb_acks",
        ),
    ]


# -- PostgreSQL ----------------------------------------------------------------------------------


def _postgres_cases(ns: str, schema: str) -> list[Case]:
    def sql(statement: str, *params: Any) -> Callable[[psycopg.Connection[Any]], Any]:
        return lambda conn: conn.execute(statement.replace("S.", f'"{schema}".'), params)

    members = "UPDATE S.pb_members SET {} = %s::jsonb WHERE namespace = %s AND identity = 'a'"
    return [
        Case("traits-array", sql(members.format("traits"), "[1]", ns), "pb_members"),
        Case("traits-string", sql(members.format("traits"), '"x"', ns), "pb_members"),
        Case("info-number", sql(members.format("info"), "3", ns), "pb_members"),
        Case(
            "assignment-shape",
            sql('UPDATE S.pb_assignments SET slots = \'{"j": "x"}\' WHERE namespace = %s', ns),
            "pb_assignments",
        ),
        Case(
            "assignment-array",
            sql("UPDATE S.pb_assignments SET slots = '[1]' WHERE namespace = %s", ns),
            "pb_assignments",
        ),
        Case(
            "unplaced-array",
            sql("UPDATE S.pb_groups SET unplaced = '[1]' WHERE namespace = %s", ns),
            "pb_groups",
        ),
        Case(
            "partitions-shape",
            sql("UPDATE S.pb_groups SET partitions = '{\"j\": [1, 0]}' WHERE namespace = %s", ns),
            "pb_groups",
        ),
        Case(
            "count-huge",
            sql(
                "UPDATE S.pb_counts SET count = 1000000000000 "
                "WHERE namespace = %s AND job_id = 'j'",
                ns,
            ),
            "pb_counts",
            SCALE,
        ),
        Case(
            "paused-huge",
            sql(
                "UPDATE S.pb_counts SET resume_to = 10000000000 "
                "WHERE namespace = %s AND job_id = 'p'",
                ns,
            ),
            "pb_counts",
            SCALE,
        ),
        Case(
            "command-number",
            sql(
                "INSERT INTO S.pb_commands (namespace, identity, command, expires_at) "
                "VALUES (%s, 'a', '1', now() + interval '1 minute')",
                ns,
            ),
            "pb_commands",
        ),
    ]


# -- the matrix ----------------------------------------------------------------------------------


@pytest.fixture
def raw(backend_kind: str, backend_url: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A plain connection to the backend, as another program (or a person) would use."""
    if backend_kind == "redis":
        client = redis.Redis.from_url(backend_url, decode_responses=True)
        yield client
        client.close()
    elif backend_kind == "sqlite":
        conn = sqlite3.connect(str(sqlite_path(backend_url)), isolation_level=None)
        yield conn
        conn.close()
    else:
        with psycopg.connect(request.getfixturevalue("postgres_url"), autocommit=True) as conn:
            yield conn


def cases_for(backend_kind: str, namespace: str, request: pytest.FixtureRequest) -> list[Case]:
    if backend_kind == "redis":
        return _redis_cases(namespace)
    if backend_kind == "sqlite":
        return _sqlite_cases(namespace)
    return _postgres_cases(namespace, request.getfixturevalue("postgres_schema"))


@pytest.fixture
def fresh(backend_url: str, namespace: str, raw: Any) -> Callable[[], Backend]:
    opened: list[Backend] = []

    def make() -> Backend:
        backend = open_backend(backend_url, namespace)
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()


def wipe(backend_kind: str, raw: Any, namespace: str, request: pytest.FixtureRequest) -> None:
    if backend_kind == "redis":
        keys = list(raw.scan_iter(match=f"{namespace}:*"))
        if keys:
            raw.delete(*keys)
        return
    prefix = f'"{request.getfixturevalue("postgres_schema")}".' if backend_kind != "sqlite" else ""
    tables = ["pb_groups", "pb_members", "pb_assignments" if prefix else "pb_assignment"]
    tables += ["pb_counts", "pb_commands", "pb_acks"] + ([] if prefix else ["pb_paused"])
    placeholder = "%s" if prefix else "?"
    for table in tables:
        raw.execute(f"DELETE FROM {prefix}{table} WHERE namespace = {placeholder}", (namespace,))


def test_no_operation_lets_anything_but_a_corrupt_state_error_out(
    backend_kind: str, namespace: str, raw: Any, fresh, request: pytest.FixtureRequest
) -> None:
    """Given garbage in one key, every operation succeeds or raises CorruptStateError naming
    the key and the fix; never ValueError, TypeError, KeyError or a bare Redis error."""
    backend = fresh()
    backend.snapshot()  # creates the SQL tables
    wrong: list[str] = []
    for case in cases_for(backend_kind, namespace, request):
        for name, operation in OPERATIONS.items():
            wipe(backend_kind, raw, namespace, request)
            prepare(backend)
            case.corrupt(raw)
            try:
                operation(backend)
            except CorruptStateError as exc:
                message = str(exc)
                if case.where not in message or (REPAIR not in message and SCALE not in message):
                    wrong.append(f"{case}/{name}: message lacks key or fix: {message}")
            except BackendError as exc:
                wrong.append(f"{case}/{name}: {type(exc).__name__}: {exc}")
            except Exception as exc:
                wrong.append(f"{case}/{name}: {type(exc).__name__}: {exc}")
    assert not wrong, "\n".join(wrong)


# -- the balancer --------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [-3, 2.5, "7", None, MAX_WORKERS_HARD_LIMIT + 1])
def test_the_balancer_ignores_a_runtime_count_that_is_not_one(count: Any, caplog) -> None:
    """A count that no client could have written falls back to the config's, logged once."""
    member = MemberState("a", 0.0, TRAITS, {})
    snapshot = GroupSnapshot(
        version=2,
        assignment_version=1,
        members=[member],
        counts={"j": count},
        assignment={},
        unplaced={},
    )
    with caplog.at_level(logging.ERROR):
        assert effective_counts(snapshot) == {"j": 2}
        assert compute(snapshot).slots == {"a": {"j": (0, 1)}}
    lines = [r.getMessage() for r in caplog.records if "job 'j'" in r.getMessage()]
    assert len(lines) == 1 and SCALE in lines[0]


# -- real processes ------------------------------------------------------------------------------

JOB = {"class": "support.jobs:RecordingJob", "records": 4, "record_time": 0.025}
EXPIRY = 3.0  # the default process_expiry: a process cut off this long runs nothing


def _corrupt_redis(raw: redis.Redis, ns: str) -> None:
    """Every key of the group's derived state garbage, half of them of the wrong type; the
    counts and pauses stay readable, plus one unreadable count."""
    for key in ("members", "traits", "info", "assignment", "assignment_version", "unplaced"):
        raw.delete(f"{ns}:{key}")
    raw.set(f"{ns}:version", "garbage")
    raw.rpush(f"{ns}:assignment_version", "x")
    raw.set(f"{ns}:members", "x")
    raw.set(f"{ns}:traits", "x")
    raw.rpush(f"{ns}:info", "x")
    raw.set(f"{ns}:assignment", "x")
    raw.hset(f"{ns}:unplaced", "x", "1")
    raw.hset(f"{ns}:counts", "z", "-3")


def _corrupt_sqlite(raw: sqlite3.Connection, ns: str) -> None:
    raw.execute(
        "UPDATE pb_groups SET version = 'garbage', assignment_version = x'00', unplaced = 7 "
        "WHERE namespace = ?",
        (ns,),
    )
    raw.execute(
        "UPDATE pb_members SET traits = 'x', info = '[1]', deadline = 'soon' WHERE namespace = ?",
        (ns,),
    )
    raw.execute("UPDATE pb_assignment SET slots = 'x' WHERE namespace = ?", (ns,))
    raw.execute("INSERT INTO pb_counts (namespace, job_id, count) VALUES (?, 'z', 'lots')", (ns,))


def _corrupt_postgres(raw: psycopg.Connection[Any], ns: str, schema: str) -> None:
    """What typed columns allow: jsonb of the wrong shape, a count beyond the hard limit."""
    s = f'"{schema}"'
    raw.execute(f"UPDATE {s}.pb_assignments SET slots = '[1]' WHERE namespace = %s", (ns,))
    raw.execute(f"UPDATE {s}.pb_groups SET unplaced = '[1]' WHERE namespace = %s", (ns,))
    raw.execute(
        f"UPDATE {s}.pb_members SET traits = '[1]', info = '\"x\"' WHERE namespace = %s", (ns,)
    )
    raw.execute(
        f"INSERT INTO {s}.pb_counts (namespace, job_id, count) VALUES (%s, 'z', 10000000000)",
        (ns,),
    )


@pytest.mark.backends("sqlite", "postgresql")
def test_a_group_with_every_key_corrupted_stays_up_runs_nothing_and_repair_restores_it(
    backend_kind: str,
    namespace: str,
    raw: Any,
    group_config,
    spawn,
    iteration_log,
    request: pytest.FixtureRequest,
) -> None:
    """Given two processes running job q at a runtime count of 3 and job r paused, when every
    key of the group's derived state is overwritten with garbage, then both processes stay up,
    log the key and the fix, and run nothing once their membership can no longer be valid;
    `status` names what it cannot read; `repair` without --yes changes nothing; `repair --yes`
    brings every slot back within seconds with the count and the pause as they were."""
    config = group_config({"q": {**JOB, "workers": 4}, "r": {**JOB, "workers": 1}})
    a = spawn(config, "a")
    b = spawn(config, "b")
    assert pb("scale", "-c", str(config), "q", "3").returncode == 0
    assert pb("pause", "-c", str(config), "r").returncode == 0
    wait_until(
        lambda: (
            set().union(*running_by_pid(iteration_log, time.time() - 0.6).values()) == {0, 1, 2}
            and len(running_by_pid(iteration_log, time.time() - 0.6)) == 2
        ),
        20,
        message="q's 3 slots on both processes",
    )

    corrupted_at = time.time()
    _corrupt_all(backend_kind, raw, namespace, request)

    time.sleep(EXPIRY + 1.5)
    quiet_since = time.time()
    time.sleep(2.0)
    assert a.popen.poll() is None and b.popen.poll() is None, a.log()[-2000:] + b.log()[-2000:]
    if backend_kind == "postgresql":
        # Typed columns leave only jsonb of the wrong shape: the processes rewrite their
        # traits and info at each heartbeat and the next assignment replaces the rest.
        running = running_by_pid(iteration_log, quiet_since)
        assert set().union(*running.values()) == {0, 1, 2}
    else:
        assert running_by_pid(iteration_log, quiet_since) == {}, "ran without valid membership"
        for proc in (a, b):
            assert REPAIR in proc.log(), proc.log()[-3000:]
    assert running_by_pid(iteration_log, quiet_since, job="r") == {}
    for proc in (a, b):
        assert "Traceback" not in proc.log(), proc.log()[-3000:]

    status = pb("status", "--json", "-c", str(config))
    assert status.returncode == 1, status.stderr
    assert REPAIR in status.stderr
    document = json.loads(status.stdout)
    assert document["problems"], document
    assert all(p["where"] and p["fix"] for p in document["problems"])
    table = pb("status", "-c", str(config))
    assert "Unreadable data" in table.stdout and table.returncode == 1

    dry = pb("repair", "-c", str(config))
    assert dry.returncode == 0, dry.stderr
    assert "nothing was changed" in dry.stdout
    assert "q=3" in dry.stdout and "r=1" in dry.stdout, dry.stdout
    assert json.loads(pb("status", "--json", "-c", str(config)).stdout)["problems"]

    repaired_at = time.time()
    done = pb("repair", "--yes", "-c", str(config))
    assert done.returncode == 0, done.stderr
    assert "repaired:" in done.stdout

    def all_back() -> bool:
        recent = running_by_pid(iteration_log, max(repaired_at, time.time() - 0.6))
        return set().union(*recent.values()) == {0, 1, 2} if recent else False

    wait_until(all_back, 8, message="q's 3 slots running again")
    after = json.loads(pb("status", "--json", "-c", str(config)).stdout)
    assert after["problems"] == [], after["problems"]
    assert (
        after["jobs"]["q"]["scheduled"] == 3 and after["jobs"]["q"]["scheduled_from"] == "runtime"
    )
    assert after["jobs"]["r"]["paused"] and after["jobs"]["r"]["resume_to"] == 1
    assert "z" not in after["jobs"] or after["jobs"]["z"]["scheduled_from"] != "runtime"
    assert {p["pid"] for p in after["processes"]} == {a.pid, b.pid}
    assert a.popen.poll() is None and b.popen.poll() is None
    assert not iteration_log.overlaps()
    assert corrupted_at < repaired_at


@pytest.mark.backends("redis")
def test_a_negative_count_written_by_hand_is_ignored_and_logged_once(
    namespace: str, raw: redis.Redis, group_config, spawn, iteration_log
) -> None:
    """The config's count applies instead; the processes log the key and the fix once each,
    however often they rebalance."""
    config = group_config({"q": {**JOB, "workers": 2}})
    a = spawn(config, "a")
    wait_until(settled(iteration_log, {a.pid: 2}), 15, message="a runs q's 2 slots")
    raw.hset(f"{namespace}:counts", "q", "-3")
    b = spawn(config, "b")  # its joining makes the group recompute the assignment
    wait_until(settled(iteration_log, {a.pid: 1, b.pid: 1}), 15, message="a 1/1 split")
    c = spawn(config, "c")
    wait_until(lambda: "joining group" in c.log(), 10, message="c joins")
    c.send(signal.SIGTERM)
    c.wait(10)
    wait_until(settled(iteration_log, {a.pid: 1, b.pid: 1}), 15, message="back to 1/1")
    assert a.popen.poll() is None and b.popen.poll() is None
    logged = [
        [line for line in proc.log().splitlines() if f"{namespace}:counts[q]" in line]
        for proc in (a, b)
    ]
    assert any(logged) and all(len(lines) <= 1 for lines in logged), logged
    assert all(SCALE in line for lines in logged for line in lines)


@pytest.mark.backends("redis")
def test_a_redis_group_with_every_key_corrupted_discards_it_and_heals_itself(
    namespace: str, raw: redis.Redis, group_config, spawn, iteration_log
) -> None:
    """Given two processes running job q at a runtime count of 3 and job r paused, when every
    key of the group's derived state (membership, versions, assignment) is overwritten with
    garbage or another type, then the next heartbeat discards it and begins a new incarnation:
    every process logs which keys it discarded, stops its slots, and no slot runs again for
    process_expiry + takeover_grace; then every slot runs again with the count and the pause
    as they were, no slot ever ran twice at once, and `status` names only the unreadable
    count, which `repair --yes` removes."""
    config = group_config({"q": {**JOB, "workers": 4}, "r": {**JOB, "workers": 1}})
    a = spawn(config, "a")
    b = spawn(config, "b")
    assert pb("scale", "-c", str(config), "q", "3").returncode == 0
    assert pb("pause", "-c", str(config), "r").returncode == 0
    wait_until(
        lambda: (
            set().union(*running_by_pid(iteration_log, time.time() - 0.6).values()) == {0, 1, 2}
            and len(running_by_pid(iteration_log, time.time() - 0.6)) == 2
        ),
        20,
        message="q's 3 slots on both processes",
    )
    _corrupt_redis(raw, namespace)
    corrupted_at = time.time()

    def all_back() -> bool:
        recent = running_by_pid(iteration_log, time.time() - 0.6)
        return bool(recent) and set().union(*recent.values()) == {0, 1, 2}

    # The hold: process_expiry (3 s) + takeover_grace (1 s), after a heartbeat (1 s) notices.
    wait_until(lambda: not all_back(), 5, message="the slots stop for the new incarnation")
    wait_until(all_back, 15, message="q's 3 slots running again by themselves")
    healed_at = time.time()
    assert healed_at - corrupted_at < 3.0 + 1.0 + 1.0 + 5.0
    for proc in (a, b):
        assert proc.popen.poll() is None, proc.log()[-3000:]
        assert "Traceback" not in proc.log(), proc.log()[-3000:]
    logged = a.log() + b.log()
    assert "unreadable group state was discarded" in logged, logged[-3000:]
    assert f"{namespace}:members held a string" in logged
    assert not iteration_log.overlaps()
    assert running_by_pid(iteration_log, corrupted_at, job="r") == {}

    status = json.loads(pb("status", "--json", "-c", str(config)).stdout)
    assert [p["where"] for p in status["problems"]] == [f"{namespace}:counts[z]"], status
    assert status["jobs"]["q"]["scheduled"] == 3
    assert status["jobs"]["r"]["paused"] and status["jobs"]["r"]["resume_to"] == 1
    assert pb("repair", "--yes", "-c", str(config)).returncode == 0
    assert json.loads(pb("status", "--json", "-c", str(config)).stdout)["problems"] == []


# -- repair on each backend ----------------------------------------------------------------------


def _corrupt_all(backend_kind: str, raw: Any, ns: str, request: pytest.FixtureRequest) -> None:
    if backend_kind == "redis":
        _corrupt_redis(raw, ns)
    elif backend_kind == "sqlite":
        _corrupt_sqlite(raw, ns)
    else:
        _corrupt_postgres(raw, ns, request.getfixturevalue("postgres_schema"))


def test_repair_without_apply_writes_nothing_and_with_it_keeps_counts_and_pauses(
    backend_kind: str, namespace: str, raw: Any, fresh, request: pytest.FixtureRequest
) -> None:
    backend = fresh()
    prepare(backend)
    lock = backend.lock_acquire("j:0", "a", 30.0)
    assert lock is not None
    _corrupt_all(backend_kind, raw, namespace, request)
    before = backend.inspect()
    assert before.problems

    plan = backend.repair(apply=False)
    assert not plan.applied and plan.actions
    assert (plan.counts, plan.paused) == ({"j": 3, "p": 0}, {"p": 2})
    assert backend.inspect().problems == before.problems

    done = backend.repair(apply=True)
    assert done.applied
    after = backend.inspect()
    assert after.problems == []
    snapshot = backend.snapshot()
    assert snapshot.counts == {"j": 3, "p": 0} and backend.paused_counts() == {"p": 2}
    assert snapshot.assignment == {} and snapshot.unplaced == {}
    assert snapshot.version > time.time() * 1000 - 60_000 > snapshot.assignment_version
    # The lock and its fencing counter are as they were: the holder renews it, the next
    # holder gets the next fencing token.
    assert backend.lock_renew("j:0", lock.token, 30.0)
    assert backend.lock_release("j:0", lock.token)
    again = backend.lock_acquire("j:0", "a", 30.0)
    assert again is not None and again.fence > lock.fence
    beat(backend)
    assert rebalance(backend) is not None


@pytest.mark.backends("redis")
def test_repair_keeps_lock_holders_as_members_when_the_membership_key_is_deleted(
    namespace: str, raw: redis.Redis, fresh
) -> None:
    """Until its lock expires no peer may take over a slot whose holder may still run it."""
    backend = fresh()
    prepare(backend)
    assert backend.lock_acquire("j:0", "a", 30.0) is not None
    raw.delete(f"{namespace}:members")
    raw.set(f"{namespace}:members", "x")
    backend.repair(apply=True)
    assert 25_000 < raw.zscore(f"{namespace}:members", "a") - time.time() * 1000 <= 30_000
    assert backend.lock_acquire("j:0", "b", 30.0) is None
