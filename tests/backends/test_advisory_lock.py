"""The ``advisory_lock`` driver: PostgreSQL session-level advisory locks guarding worker slots,
with every coordination backend, against a real PostgreSQL and real processes."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from process_balancer.backends import Backend, open_backend
from process_balancer.locks import AdvisoryLock, LockContext, resolve_driver
from process_balancer.locks.advisory import advisory_key
from support.harness import settled, wait_until

JOB = {"class": "support.jobs:AdvisoryRecordingJob", "records": 4, "record_time": 0.025}


@pytest.fixture
def pg_backend(postgresql_backend_url: str, namespace: str) -> Iterator[Backend]:
    backend = open_backend(postgresql_backend_url, namespace)
    yield backend
    backend.close()


@pytest.fixture
def db(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def make_lock(pg_backend: Backend) -> Iterator[Callable[..., AdvisoryLock]]:
    made: list[AdvisoryLock] = []

    def make(index: int = 0, holder: str = "me", **options: Any) -> AdvisoryLock:
        context = LockContext(pg_backend, pg_backend.namespace, "j", index, holder, 30.0, options)
        lock = AdvisoryLock(context)
        made.append(lock)
        return lock

    yield make
    for lock in made:
        lock.close()


def holder_pid(db: psycopg.Connection[Any], key: int) -> int | None:
    """The server process holding advisory lock ``key`` (a bigint key is split over
    classid, the high 32 bits, and objid, the low 32 bits)."""
    row = db.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        "AND classid::bigint = %s AND objid::bigint = %s",
        ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
    ).fetchone()
    return None if row is None else int(row[0])


def job_options(backend_kind: str, postgresql_backend_url: str, **extra: Any) -> dict[str, Any]:
    """The job entry; on a backend other than PostgreSQL the locks need advisory_lock_url."""
    options = {**JOB, **extra}
    if backend_kind != "postgresql":
        options["advisory_lock_url"] = postgresql_backend_url
    return options


# -- the driver on its own ------------------------------------------------------------------------


def test_the_key_is_the_first_8_bytes_of_a_sha256_of_the_names_as_a_signed_bigint() -> None:
    digest = hashlib.sha256(b"process_balancer:ns:job:3").digest()
    assert advisory_key("ns", "job", 3) == int.from_bytes(digest[:8], "big", signed=True)
    assert advisory_key("ns", "job", 3) != advisory_key("ns", "job", 4)
    assert -(2**63) <= advisory_key("other", "job", 3) < 2**63


def test_the_driver_is_built_in_by_name() -> None:
    assert resolve_driver("advisory_lock", job_id="j") is AdvisoryLock


def test_one_holder_per_slot_and_the_fencing_token_grows(make_lock) -> None:
    first, second, elsewhere = make_lock(), make_lock(holder="peer"), make_lock(index=1)
    fence = first.try_acquire()
    assert fence is not None
    assert second.try_acquire() is None
    assert elsewhere.try_acquire() is not None
    first.release()
    next_fence = second.try_acquire()
    assert next_fence is not None and next_fence > fence
    assert first.ttl is None and first.renew_interval == 1.0


def lock_connections(db: psycopg.Connection[Any]) -> int:
    """This process's open connections of advisory locks on slot j:0."""
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
        (f"process_balancer[{os.getpid()}] lock j:0",),
    ).fetchone()
    return int(row[0]) if row else 0


def test_a_connection_is_open_only_while_its_lock_is_held(make_lock, db) -> None:
    """A worker waiting for a slot held elsewhere keeps no connection between attempts, and
    a release closes the holder's: one connection per held lock, none per waiting worker."""
    holder, waiter = make_lock(), make_lock(holder="peer")
    assert holder.try_acquire() is not None
    for _ in range(3):
        assert waiter.try_acquire() is None
    # A closed session leaves pg_stat_activity when its server process has ended: soon.
    wait_until(lambda: lock_connections(db) == 1, 2, message="only the holder's connection")
    holder.release()
    wait_until(lambda: lock_connections(db) == 0, 2, message="no connection after release")
    assert waiter.try_acquire() is not None
    assert lock_connections(db) == 1
    waiter.release()
    wait_until(lambda: lock_connections(db) == 0, 2, message="no connection after release")


def test_a_terminated_holder_connection_loses_the_lock_and_frees_it(
    make_lock, db, pg_backend: Backend
) -> None:
    holder, peer = make_lock(), make_lock(holder="peer")
    assert holder.try_acquire() is not None and holder.renew()
    pid = holder_pid(db, advisory_key(pg_backend.namespace, "j", 0))
    assert pid is not None
    db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert not holder.renew()
    assert wait_until(lambda: peer.try_acquire(), 5, message="the lock to be free")


def test_release_only_frees_the_callers_own_lock(make_lock) -> None:
    holder, peer = make_lock(), make_lock(holder="peer")
    assert holder.try_acquire() is not None
    peer.release()  # never acquired: must not free the holder's lock
    assert peer.try_acquire() is None
    assert holder.renew()


def test_without_a_postgres_backend_the_option_is_required(
    redis_url: str, namespace: str, postgresql_backend_url: str
) -> None:
    backend = open_backend(redis_url, namespace)
    try:
        with pytest.raises(ValueError, match=r"job 'q'.*advisory_lock_url"):
            AdvisoryLock.check("q", {}, backend)
        AdvisoryLock.check("q", {"advisory_lock_url": postgresql_backend_url}, backend)
        with pytest.raises(ValueError, match=r"job 'q': advisory lock database: cannot connect"):
            AdvisoryLock.check("q", {"advisory_lock_url": "postgresql://x@127.0.0.1:1/x"}, backend)
    finally:
        backend.close()


# -- real processes -------------------------------------------------------------------------------


def test_two_processes_share_the_slots_and_a_killed_holders_locks_free(
    backend_kind: str, postgresql_backend_url: str, group_config, spawn, iteration_log
) -> None:
    """Given two processes sharing 4 slots guarded by advisory locks, when one is killed,
    then the other runs all 4 within seconds, no slot ever ran twice at once and every slot's
    fencing tokens grew from one iteration to the next."""
    config = group_config(
        {"q": {**job_options(backend_kind, postgresql_backend_url), "workers": 4}}
    )
    a = spawn(config, "a")
    b = spawn(config, "b")
    wait_until(settled(iteration_log, {a.pid: 2, b.pid: 2}), 20, message="a 2/2 split")
    b.kill()
    iteration_log.dead[b.pid] = time.time()
    killed_at = time.time()
    wait_until(settled(iteration_log, {a.pid: 4}), 15, message="a runs all 4")
    handoff = min(
        i.start for i in iteration_log.intervals() if i.pid == a.pid and i.start > killed_at
    )
    assert handoff - killed_at < 8
    assert not iteration_log.overlaps()
    by_slot: dict[int, list[int]] = {}
    for interval in iteration_log.intervals():
        assert interval.fence is not None
        by_slot.setdefault(interval.slot, []).append(interval.fence)
    for fences in by_slot.values():
        assert fences == sorted(fences) and len(set(fences)) == len(fences)


def test_a_lost_lock_connection_stops_the_iteration_and_unlock_records_runs(
    backend_kind: str,
    postgresql_backend_url: str,
    group_config,
    spawn,
    iteration_log,
    db,
    namespace: str,
) -> None:
    """Given a process inside a long iteration of slot q:0, when the server ends the session
    holding its advisory lock, then the iteration stops within about a second, unlock_records
    runs, and the next iteration takes the lock again under a higher fencing token."""
    options = job_options(backend_kind, postgresql_backend_url, records=200, record_time=0.05)
    config = group_config({"q": {**options, "workers": 1}})
    a = spawn(config, "a")
    wait_until(lambda: iteration_log.events(), 20, message="a running")
    key = advisory_key(namespace, "q", 0)
    pid = wait_until(lambda: holder_pid(db, key), 5, message="the lock holder")
    db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    terminated_at = time.time()
    first = wait_until(
        lambda: [i for i in iteration_log.intervals() if i.closed], 10, message="the end"
    )[0]
    assert first.done is not None and first.done < 200
    assert first.end - terminated_at < 2.0
    assert "lost its worker lock" in a.log()
    later = wait_until(
        lambda: [i for i in iteration_log.intervals() if i.start > first.end], 10, message="next"
    )[0]
    assert later.fence is not None and first.fence is not None and later.fence > first.fence


@pytest.mark.backends("redis")
def test_a_redis_backend_without_advisory_lock_url_is_a_startup_error(group_config, spawn) -> None:
    config = group_config({"q": {**JOB, "workers": 1}})
    a = spawn(config, "a")
    assert a.wait(30) == 2
    log = a.log()
    assert "job 'q' uses lock_driver 'advisory_lock', which needs PostgreSQL" in log
    assert "set the job option advisory_lock_url" in log
    assert "Traceback" not in log
