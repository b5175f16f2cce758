"""What is particular to the Redis backend: data it finds in its keys that it did not write."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from process_balancer.backends import CorruptStateError
from process_balancer.backends.redis import RedisBackend

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


def test_garbage_in_a_lock_key_is_reported_and_kept(
    backend: RedisBackend, rclient: redis.Redis, namespace: str
) -> None:
    beat(backend, "a")
    rclient.set(f"{namespace}:lock:j:0", "x")
    with pytest.raises(CorruptStateError, match="not a process-balancer lock"):
        backend.lock_acquire("j:0", "a", 5)
    assert rclient.get(f"{namespace}:lock:j:0") == "x"


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
