"""What is particular to the Redis backend: data it finds in its keys that it did not write."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
import redis

from process_balancer.backends import CorruptStateError, Gate, Partition
from process_balancer.backends.redis.backend import RedisBackend
from support.servers import RedisServer

TRAITS = {"capacity": 4, "active": True, "jobs": ["j"], "defaults": {"j": 2}, "started_at": 1.0}


@pytest.fixture
def backend(redis_url: str, namespace: str) -> Iterator[RedisBackend]:
    b = RedisBackend(redis_url, namespace)
    yield b
    b.close()


def beat(backend: RedisBackend, identity: str, expiry: float = 3.0) -> None:
    backend.heartbeat(
        identity, traits=TRAITS, info={"x": 1}, expiry=expiry, seen_assignment_version=-1
    )


def test_garbage_count_is_reported_and_kept(
    backend: RedisBackend, rclient: redis.Redis, namespace: str
) -> None:
    rclient.hset(f"{namespace}:counts", "j", "lots")
    with pytest.raises(CorruptStateError, match="'lots'"):
        backend.get_count("j")
    with pytest.raises(CorruptStateError, match="not an integer"):
        backend.set_count("j", to=None, by=1, default=1)
    assert rclient.hget(f"{namespace}:counts", "j") == "lots"


def test_renew_and_release_never_touch_another_holders_lock(
    backend: RedisBackend, rclient: redis.Redis, namespace: str
) -> None:
    beat(backend, "a")
    beat(backend, "b")
    held = backend.lock_acquire("j:0", "a", 5)
    assert held is not None
    rclient.delete(f"{namespace}:lock:j:0")
    other = backend.lock_acquire("j:0", "b", 5)
    assert other is not None
    assert not backend.lock_renew("j:0", held.token, 5)
    assert not backend.lock_release("j:0", held.token)
    assert rclient.get(f"{namespace}:lock:j:0").startswith(other.token)


@pytest.mark.parametrize("kind", ["string", "hash"])
def test_garbage_in_a_lock_key_holds_the_slot_until_it_expires_then_frees_it(
    backend: RedisBackend, rclient: redis.Redis, namespace: str, kind: str, caplog
) -> None:
    """A lock key this program never wrote may stand for a holder nobody can see: the slot
    stays taken until the key expires, at the latest the lock's ttl + grace after it was
    first seen (a holder cannot renew through it, so it stops by then), and is free after."""
    beat(backend, "a")
    lock = f"{namespace}:lock:j:0"
    if kind == "string":
        rclient.set(lock, "x")
    else:
        rclient.hset(lock, "x", "1")
    with caplog.at_level(logging.ERROR):
        assert backend.lock_acquire("j:0", "a", 0.3, grace=0.2) is None
        assert backend.lock_acquire("j:0", "a", 0.3, grace=0.2) is None
    assert rclient.type(lock) == kind, "the value found is kept until it expires"
    assert 0 < rclient.pttl(lock) <= 500
    lines = [r.getMessage() for r in caplog.records if lock in r.getMessage()]
    assert len(lines) == 1 and "not a process-balancer lock" in lines[0], lines
    time.sleep(0.6)
    taken = backend.lock_acquire("j:0", "a", 0.3, grace=0.2)
    assert taken is not None
    assert taken.fence >= time.time() * 1_000_000 - 5_000_000


def test_a_garbage_lock_key_with_a_long_ttl_is_cut_to_the_lock_ttl(
    backend: RedisBackend, rclient: redis.Redis, namespace: str
) -> None:
    beat(backend, "a")
    rclient.set(f"{namespace}:lock:j:0", "x", ex=3600)
    assert backend.lock_acquire("j:0", "a", 1.0, grace=0.5) is None
    assert 0 < rclient.pttl(f"{namespace}:lock:j:0") <= 1500


@pytest.mark.parametrize("garbage", ["lots", "-1", "1e400", "9" * 30])
def test_an_unreadable_fencing_counter_still_gives_a_higher_token(
    backend: RedisBackend, rclient: redis.Redis, namespace: str, garbage: str
) -> None:
    beat(backend, "a")
    first = backend.lock_acquire("j:0", "a", 5)
    assert first is not None and backend.lock_release("j:0", first.token)
    rclient.set(f"{namespace}:fence:j:0", garbage)
    second = backend.lock_acquire("j:0", "a", 5)
    assert second is not None and second.fence > first.fence
    assert rclient.get(f"{namespace}:fence:j:0") == str(second.fence)


def test_renew_and_release_of_a_lock_key_of_another_type_answer_no(
    backend: RedisBackend, rclient: redis.Redis, namespace: str
) -> None:
    beat(backend, "a")
    held = backend.lock_acquire("j:0", "a", 5)
    assert held is not None
    rclient.delete(f"{namespace}:lock:j:0")
    rclient.rpush(f"{namespace}:lock:j:0", held.token)
    assert not backend.lock_renew("j:0", held.token, 5)
    assert not backend.lock_release("j:0", held.token)
    assert rclient.type(f"{namespace}:lock:j:0") == "list"


def test_pause_refuses_an_unreadable_stored_count(backend: RedisBackend, rclient) -> None:
    rclient.hset(f"{backend.namespace}:counts", "j", "many")
    with pytest.raises(CorruptStateError, match="not a count"):
        backend.pause("j", default=1)
    assert backend.paused_counts() == {}


def test_acks_are_recorded_per_command_and_expire(backend: RedisBackend, rclient) -> None:
    backend.ack_command("a:1:x", "c1", 123.5)
    backend.ack_command("b:2:y", "c1", 124.0)
    backend.ack_command("a:1:x", "c2", 125.0)
    assert backend.command_acks("c1") == {"a:1:x": 123.5, "b:2:y": 124.0}
    assert backend.command_acks("nothing") == {}
    assert 0 < rclient.pttl(f"{backend.namespace}:acks:c1") <= 10 * 60 * 1000


@pytest.mark.parametrize(
    "value", ["1e3", "0x10", " 5", "5 ", "+5", "5.0", "nan", "inf", "", "99999999999999999999"]
)
def test_the_count_scripts_refuse_what_is_not_a_decimal_integer(
    backend: RedisBackend, rclient: redis.Redis, namespace: str, value: str
) -> None:
    """Whatever a client sends, only the decimal digits of a count in range are stored: Lua
    would read most of these as numbers, and round the last one to a double."""
    keys = [f"{namespace}:counts", f"{namespace}:version", f"{namespace}:paused"]
    script = backend._scripts["set_count"]
    assert script(keys=keys, args=["j", "to", value, "1", "c", "10"])[:1] == [-2]
    assert script(keys=keys, args=["j", "by", value, "1", "c", "10"])[:1] == [-2]
    assert script(keys=keys, args=["j", "by", "1", value, "c", "10"])[:1] == [-3]
    pause = backend._scripts["pause"]
    pause_keys = [f"{namespace}:counts", f"{namespace}:paused", f"{namespace}:version"]
    assert pause(keys=pause_keys, args=["j", value, "c", "10"])[:1] == [-3]
    assert rclient.keys(f"{namespace}:*") == []


def test_the_script_ceiling_is_never_above_the_hard_limit(
    backend: RedisBackend, rclient: redis.Redis, namespace: str
) -> None:
    keys = [f"{namespace}:counts", f"{namespace}:version", f"{namespace}:paused"]
    for maximum in ("99999999", "-1", "lots", ""):
        answer = backend._scripts["set_count"](
            keys=keys, args=["j", "to", "1000001", "1", "c", maximum]
        )
        assert answer == [-2, "1000001", "1000000"]
    assert rclient.keys(f"{namespace}:*") == []


def test_a_stored_count_beyond_the_hard_limit_cannot_be_changed_by_a_step(
    backend: RedisBackend, rclient: redis.Redis, namespace: str
) -> None:
    rclient.hset(f"{namespace}:counts", "j", "9.9999999999999992e+22")
    with pytest.raises(CorruptStateError, match="not an integer from 0 to 1,000,000"):
        backend.set_count("j", to=None, by=-1, default=1)
    assert backend.set_count("j", to=3, by=None, default=1) == 3


def test_a_heartbeat_discards_unreadable_group_state_and_begins_a_new_incarnation(
    backend: RedisBackend, rclient: redis.Redis, namespace: str
) -> None:
    """Membership, versions and assignment holding garbage are derived state: the heartbeat
    drops them, says which, and begins a new incarnation with the hold, the version past
    every one a process has seen. Counts and locks are left as they are."""
    first = backend.heartbeat(
        "a", traits=TRAITS, info={}, expiry=3.0, seen_assignment_version=-1, hold=3.0
    )
    backend.set_count("j", to=5, by=None, default=2)
    rclient.set(f"{namespace}:lock:j:0", "x")
    rclient.delete(f"{namespace}:members", f"{namespace}:incarnation")
    rclient.set(f"{namespace}:members", "\x00garbage")
    rclient.set(f"{namespace}:version", "garbage")
    rclient.rpush(f"{namespace}:assignment", "x")
    rclient.set(f"{namespace}:incarnation", "x")
    started = time.time()
    result = backend.heartbeat(
        "a",
        traits=TRAITS,
        info={},
        expiry=3.0,
        seen_assignment_version=-1,
        known_incarnation=first.incarnation,
        known_version=10**9,
        hold=3.0,
    )
    assert result.incarnation != first.incarnation
    assert "unreadable group state was discarded" in result.new_incarnation
    for held in ("members held a string", 'version held "garbage"', "assignment held a list"):
        assert f"{namespace}:{held}" in result.new_incarnation, result.new_incarnation
    assert result.version > max(10**9, int(started * 1000) - 1)
    grants_at = float(rclient.hget(f"{namespace}:incarnation", "grants_at"))
    assert grants_at / 1000 >= started + 2.5
    assert backend.snapshot().members[0].identity == "a"
    assert backend.get_count("j") == 5
    assert rclient.get(f"{namespace}:lock:j:0") == "x"
    # A commands list of another type is dropped without a new incarnation.
    rclient.set(f"{namespace}:commands:a", "x")
    again = backend.heartbeat(
        "a",
        traits=TRAITS,
        info={},
        expiry=3.0,
        seen_assignment_version=-1,
        known_incarnation=result.incarnation,
        hold=3.0,
    )
    assert again.incarnation == result.incarnation and again.commands == []
    assert rclient.exists(f"{namespace}:commands:a") == 0


def test_a_server_restarted_from_an_older_snapshot_grants_no_lock_before_a_new_incarnation(
    redis_server: RedisServer,
) -> None:
    # "a" holds j:0 and keeps heartbeating; the server restarts from a snapshot in which a's
    # membership has expired. Before a heartbeat has begun a new incarnation (and its hold is
    # over), "b" must not take j:0 over: "a" still runs it.
    backend = RedisBackend(redis_server.url, "ns")
    try:
        first = backend.heartbeat(
            "a", traits=TRAITS, info={}, expiry=0.5, seen_assignment_version=-1
        )
        backend.heartbeat("b", traits=TRAITS, info={}, expiry=30, seen_assignment_version=-1)
        held = backend.lock_acquire("j:0", "a", 30.0)
        assert held is not None
        redis_server.save_snapshot()
        time.sleep(0.6)  # a's membership in the snapshot has expired; a itself goes on
        backend.heartbeat("a", traits=TRAITS, info={}, expiry=30, seen_assignment_version=-1)
        redis_server.restart_from_snapshot()
        with redis_server.client() as client:
            assert client.exists("ns:lock:j:0")  # the snapshot has the lock and its holder
        assert backend.lock_acquire("j:0", "b", 30.0) is None
        after = backend.heartbeat(
            "b",
            traits=TRAITS,
            info={},
            expiry=30,
            seen_assignment_version=-1,
            known_incarnation=first.incarnation,
            hold=1.0,
        )
        assert "server changed" in after.new_incarnation
        assert backend.lock_acquire("j:0", "b", 30.0) is None
        time.sleep(1.1)
        taken = backend.lock_acquire("j:0", "b", 30.0)
        assert taken is not None and taken.fence > held.fence
    finally:
        backend.close()


# -- partitions and generation gates ---------------------------------------------------------


def _assigned(backend: RedisBackend, partitions: dict[str, Partition]) -> int:
    """Member a with slots of j, the partitions stored with them; the version written."""
    backend.clear_count("other")  # a new version to write for
    beat(backend, "a")
    version = backend.snapshot().version
    assert backend.write_assignment(version, {"a": {"j": (0, 1)}}, {}, partitions)
    return version


@pytest.mark.parametrize(
    "plant",
    [
        pytest.param(lambda r, key: r.set(key, "x"), id="garbage"),
        pytest.param(lambda r, key: r.set(key, '{"j": [2, "3"]}'), id="shape"),
        pytest.param(lambda r, key: (r.delete(key), r.hset(key, "j", "1")), id="hash"),
    ],
)
def test_unreadable_partitions_are_named_refused_and_repaired(
    backend: RedisBackend, rclient: redis.Redis, namespace: str, plant, caplog
) -> None:
    key = f"{namespace}:partitions"
    backend.set_count("j", to=2, by=None, default=2)
    _assigned(backend, {"j": Partition(2, 3)})
    plant(rclient, key)
    # The heartbeat goes on, its slots without partitions (the runner then asks for a new
    # assignment), and says once where they are and what fixes them.
    with caplog.at_level(logging.ERROR):
        result = backend.heartbeat(
            "a", traits=TRAITS, info={}, expiry=3.0, seen_assignment_version=-1
        )
    assert result.slots is not None and result.partitions is None
    assert any(
        key in r.getMessage() and "process-balancer repair" in r.getMessage()
        for r in caplog.records
    )
    caplog.clear()
    problems = [p for p in backend.inspect().problems if p.part == "partitions"]
    assert [p.where for p in problems] == [key]
    with caplog.at_level(logging.WARNING):
        assert backend.lock_acquire("j:0", "a", 5, gate=Gate("j", 3)) is None
        assert backend.lock_acquire("j:1", "a", 5, gate=Gate("j", 3)) is None
    logged = [r.getMessage() for r in caplog.records if key in r.getMessage()]
    assert len(logged) == 1 and "no lock of a partitioned job is granted" in logged[0]

    report = backend.repair(apply=True)
    assert any(
        line.startswith(f"{key}: removed") and "new generation" in line for line in report.actions
    ), report.actions
    assert rclient.exists(key) == 0
    assert backend.get_count("j") == 2 and backend.inspect().problems == []
    assert backend.snapshot().partitions == {}
    _assigned(backend, {"j": Partition(2, 4)})
    assert backend.heartbeat(
        "a", traits=TRAITS, info={}, expiry=3.0, seen_assignment_version=-1
    ).partitions == {"j": Partition(2, 4)}


def test_repair_keeps_readable_partitions(backend: RedisBackend, rclient, namespace) -> None:
    _assigned(backend, {"j": Partition(2, 5)})
    rclient.set(f"{namespace}:assignment_version", "x")
    backend.repair(apply=True)
    assert backend.snapshot().partitions == {"j": Partition(2, 5)}


@pytest.mark.parametrize(
    "fields", [{"generation": "x"}, {"other": "1"}, {"generation": "0"}], ids=str
)
def test_a_gate_hash_without_a_readable_generation_is_replaced(
    backend: RedisBackend, rclient: redis.Redis, namespace: str, fields, caplog
) -> None:
    gate = f"{namespace}:gate:j"
    _assigned(backend, {"j": Partition(2, 1)})
    held = backend.lock_acquire("j:0", "a", 0.3, gate=Gate("j", 1))
    assert held is not None
    assert rclient.hgetall(gate) == {"generation": "1", "lock:j:0": "1"}
    rclient.delete(gate)
    rclient.hset(gate, mapping=fields)
    with caplog.at_level(logging.WARNING):
        assert backend.lock_acquire("j:1", "a", 0.3, gate=Gate("j", 1)) is None
    assert any(gate in r.getMessage() and "not a gate" in r.getMessage() for r in caplog.records)
    assert rclient.hget(gate, "generation") == "0"
    assert not backend.lock_renew("j:0", held.token, 0.3, gate=Gate("j", 1))
    time.sleep(0.35)
    assert backend.lock_acquire("j:1", "a", 0.3, gate=Gate("j", 1)) is not None
    assert rclient.hgetall(gate) == {"generation": "1", "lock:j:1": "1"}


def test_garbage_in_an_old_generations_lock_key_holds_the_new_one_back_until_it_expires(
    backend: RedisBackend, rclient: redis.Redis, namespace: str
) -> None:
    _assigned(backend, {"j": Partition(1, 1)})
    assert backend.lock_acquire("j:0", "a", 30, gate=Gate("j", 1)) is not None
    rclient.set(f"{namespace}:lock:j:0", "garbage")  # no TTL
    _assigned(backend, {"j": Partition(1, 2)})
    assert backend.lock_acquire("j:1", "a", 0.3, gate=Gate("j", 2)) is None
    assert 0 < rclient.pttl(f"{namespace}:lock:j:0") <= 300
    time.sleep(0.35)
    assert backend.lock_acquire("j:1", "a", 0.3, gate=Gate("j", 2)) is not None


def test_repair_keeps_an_instance_holders_member(
    backend: RedisBackend, rclient: redis.Redis, namespace: str
) -> None:
    beat(backend, "a")
    assert backend.lock_acquire("j:0", "a#7", 30.0) is not None
    rclient.delete(f"{namespace}:members")
    rclient.set(f"{namespace}:members", "x")
    backend.repair(apply=True)
    assert rclient.zscore(f"{namespace}:members", "a") is not None
    assert rclient.zscore(f"{namespace}:members", "a#7") is None
    assert backend.lock_acquire("j:0", "b", 30.0) is None
