"""The contract of partitioned jobs every backend keeps: each job's count and generation are
stored with the assignment, and a worker lock taken under a generation gate is granted only
under the stored generation, a new generation only once every lock of the earlier one is
free. Also: a holder written ``member#instance`` belongs to ``member``."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from process_balancer.backends import Backend, Gate, Partition, open_backend

pytestmark = pytest.mark.backends(in_process=True)

TRAITS = {"capacity": 4, "active": True, "jobs": ["j"], "defaults": {"j": 2}, "started_at": 1.0}


@pytest.fixture
def backend(backend_url: str, namespace: str) -> Iterator[Backend]:
    b = open_backend(backend_url, namespace)
    yield b
    b.close()


def beat(backend: Backend, identity: str, expiry: float = 3.0, seen: int = -1):  # type: ignore[no-untyped-def]
    return backend.heartbeat(
        identity, traits=TRAITS, info={}, expiry=expiry, seen_assignment_version=seen
    )


def store(backend: Backend, partitions: dict[str, Partition]) -> int:
    """Write an assignment (of nothing) with ``partitions`` for the current version."""
    beat(backend, "writer")
    version = backend.snapshot().version
    assert backend.write_assignment(version, {}, {}, partitions)
    # The next write needs a new version: a changed trait gives one.
    backend.heartbeat(
        "writer",
        traits={**TRAITS, "started_at": time.time()},
        info={},
        expiry=3.0,
        seen_assignment_version=-1,
    )
    return version


def test_partitions_are_stored_with_the_assignment(backend: Backend) -> None:
    beat(backend, "a")
    version = backend.snapshot().version
    partitions = {"j": Partition(3, 7), "k": Partition(0, 2)}
    assert backend.write_assignment(version, {"a": {"j": (0, 1, 2)}}, {}, partitions)
    assert backend.snapshot().partitions == partitions
    result = beat(backend, "a")
    assert result.slots == {"j": (0, 1, 2)}
    assert result.partitions == partitions
    # Not sent again while the assignment is unchanged.
    again = beat(backend, "a", seen=result.assignment_version)
    assert again.slots is None and again.partitions is None


def test_an_assignment_written_without_partitions_stores_none(backend: Backend) -> None:
    beat(backend, "a")
    version = backend.snapshot().version
    assert backend.write_assignment(version, {"a": {"j": (0,)}}, {})
    assert backend.snapshot().partitions == {}
    assert beat(backend, "a").partitions == {}


def test_a_gated_lock_needs_the_stored_generation(backend: Backend) -> None:
    beat(backend, "a")
    assert backend.lock_acquire("j:0", "a", 5, gate=Gate("j", 1)) is None  # none stored
    store(backend, {"j": Partition(2, 4)})
    assert backend.lock_acquire("j:0", "a", 5, gate=Gate("j", 3)) is None
    assert backend.lock_acquire("j:0", "a", 5, gate=Gate("k", 4)) is None
    taken = backend.lock_acquire("j:0", "a", 5, gate=Gate("j", 4))
    assert taken is not None
    assert backend.lock_acquire("j:1", "a", 5, gate=Gate("j", 4)) is not None
    assert backend.lock_renew("j:0", taken.token, 5, gate=Gate("j", 4))


def test_a_new_generation_starts_only_once_every_lock_of_the_old_one_is_free(
    backend: Backend,
) -> None:
    beat(backend, "a")
    beat(backend, "b")
    store(backend, {"j": Partition(3, 1)})
    old = [backend.lock_acquire(f"j:{i}", "a", 30, gate=Gate("j", 1)) for i in range(3)]
    assert all(old)
    store(backend, {"j": Partition(2, 2)})
    # The old generation is not current any more: none of its slots starts again.
    assert backend.lock_release("j:0", old[0].token)  # type: ignore[union-attr]
    assert backend.lock_acquire("j:0", "a", 30, gate=Gate("j", 1)) is None
    # j:1 and j:2 (a slot the new count drops) still run under generation 1.
    assert backend.lock_acquire("j:0", "b", 30, gate=Gate("j", 2)) is None
    assert backend.lock_release("j:1", old[1].token)  # type: ignore[union-attr]
    assert backend.lock_acquire("j:0", "b", 30, gate=Gate("j", 2)) is None
    assert backend.lock_release("j:2", old[2].token)  # type: ignore[union-attr]
    new = backend.lock_acquire("j:0", "b", 30, gate=Gate("j", 2))
    assert new is not None
    assert backend.lock_acquire("j:1", "b", 30, gate=Gate("j", 2)) is not None
    # The old generation's locks are gone from the gate: renewing one is refused.
    assert not backend.lock_renew("j:1", old[1].token, 30, gate=Gate("j", 1))  # type: ignore[union-attr]


def test_the_requesters_own_old_lock_holds_the_new_generation_back(backend: Backend) -> None:
    beat(backend, "a")
    store(backend, {"j": Partition(2, 1)})
    old = backend.lock_acquire("j:1", "a", 30, gate=Gate("j", 1))
    assert old is not None
    store(backend, {"j": Partition(3, 2)})
    assert backend.lock_acquire("j:0", "a", 30, gate=Gate("j", 2)) is None
    assert backend.lock_acquire("j:1", "a", 30, gate=Gate("j", 2)) is None
    assert backend.lock_renew("j:1", old.token, 30, gate=Gate("j", 1))
    assert backend.lock_release("j:1", old.token)
    assert backend.lock_acquire("j:1", "a", 30, gate=Gate("j", 2)) is not None


def test_an_expired_or_dead_holder_of_the_old_generation_stops_holding_it_back(
    backend: Backend,
) -> None:
    beat(backend, "dead", expiry=0.3)
    beat(backend, "a")
    store(backend, {"j": Partition(2, 1)})
    assert backend.lock_acquire("j:0", "dead", 30, grace=0.3, gate=Gate("j", 1)) is not None
    assert backend.lock_acquire("j:1", "a", 0.2, gate=Gate("j", 1)) is not None
    store(backend, {"j": Partition(2, 2)})
    assert backend.lock_acquire("j:1", "a", 30, grace=0.3, gate=Gate("j", 2)) is None
    time.sleep(0.35)
    beat(backend, "a")  # prunes "dead"; its lock is free takeover_grace after its deadline
    assert backend.lock_acquire("j:1", "a", 30, grace=0.3, gate=Gate("j", 2)) is None
    time.sleep(0.35)
    assert backend.lock_acquire("j:1", "a", 30, grace=0.3, gate=Gate("j", 2)) is not None
    assert backend.lock_acquire("j:0", "a", 30, grace=0.3, gate=Gate("j", 2)) is not None


def test_an_ungated_lock_ignores_the_gate_and_renews_without_it(backend: Backend) -> None:
    beat(backend, "a")
    plain = backend.lock_acquire("j:0", "a", 5)
    assert plain is not None
    assert backend.lock_renew("j:0", plain.token, 5)
    # A lock taken without a gate is not in it: a gated renewal is refused.
    store(backend, {"j": Partition(1, 1)})
    assert not backend.lock_renew("j:0", plain.token, 5, gate=Gate("j", 1))


def test_a_holder_with_an_instance_belongs_to_its_member(backend: Backend) -> None:
    beat(backend, "a", expiry=0.4)
    beat(backend, "b")
    first = backend.lock_acquire("j:0", "a#1", 30, grace=0.2)
    assert first is not None
    # Another run of member "a" is not the holder: "a" is alive, so the lock stays.
    assert backend.lock_acquire("j:0", "a#2", 30, grace=0.2) is None
    assert backend.lock_acquire("j:0", "b", 30, grace=0.2) is None
    # The very same run may take it again (an answer it lost).
    again = backend.lock_acquire("j:0", "a#1", 30, grace=0.2)
    assert again is not None and again.fence > first.fence
    # Once member "a" expired (plus the grace), anybody takes it over.
    time.sleep(0.45)
    beat(backend, "b")
    assert backend.lock_acquire("j:0", "b", 30, grace=0.2) is None
    time.sleep(0.25)
    assert backend.lock_acquire("j:0", "b", 30, grace=0.2) is not None


def plant_bad_gate(backend: Backend, job_id: str) -> None:
    """Make the job's gate record unreadable, as a bad restore or a foreign tool would."""
    kind = type(backend).__name__
    if kind == "MemoryBackend":
        with backend._group() as (group, _):  # type: ignore[attr-defined]
            group.gates[job_id] = "not a gate"
    elif kind == "RedisBackend":
        client = backend.client  # type: ignore[attr-defined]
        key = f"{backend.namespace}:gate:{job_id}"
        client.delete(key)
        client.set(key, "not a gate")
    elif kind == "SQLiteBackend":
        with backend.db.transaction() as conn:  # type: ignore[attr-defined]
            planted = conn.execute(
                "UPDATE pb_gates SET generation = 'x', names = 'not a list' "
                "WHERE namespace = ? AND job_id = ?",
                (backend.namespace, job_id),
            ).rowcount
        assert planted == 1
    elif kind == "PostgresBackend":
        # A generation that is not one: the row is unreadable, whatever its names.
        with backend._pool.connection() as conn:  # type: ignore[attr-defined]
            conn.execute(
                f"UPDATE {backend._s}.pb_gates SET generation = -1, "  # type: ignore[attr-defined]
                "names = '\"not a gate\"' WHERE namespace = %s AND job_id = %s",
                (backend.namespace, job_id),
            )
    else:
        pytest.fail(f"no way to plant an unreadable gate in {kind}")


def test_an_unreadable_gate_grants_nothing_until_the_old_holders_have_stopped(
    backend: Backend,
) -> None:
    beat(backend, "a")
    store(backend, {"j": Partition(2, 1)})
    held = backend.lock_acquire("j:0", "a", 0.3, gate=Gate("j", 1))
    assert held is not None
    plant_bad_gate(backend, "j")
    # Its holder cannot renew any more, and nothing is granted until it has stopped.
    assert not backend.lock_renew("j:0", held.token, 0.3, gate=Gate("j", 1))
    assert backend.lock_acquire("j:1", "a", 0.3, grace=0.1, gate=Gate("j", 1)) is None
    time.sleep(0.2)
    assert backend.lock_acquire("j:1", "a", 0.3, grace=0.1, gate=Gate("j", 1)) is None
    time.sleep(0.3)
    assert backend.lock_acquire("j:1", "a", 0.3, grace=0.1, gate=Gate("j", 1)) is not None
