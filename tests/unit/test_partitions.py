"""Partitioned jobs without servers: the generations the balancer stores, the job option,
the lock driver it needs, and what a worker does when its job's count changes."""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from process_balancer import Base, LockDriver
from process_balancer.backends import Partition
from process_balancer.backends.base import GroupSnapshot
from process_balancer.backends.memory import MemoryBackend
from process_balancer.balancing.rebalance import next_partitions, rebalance
from process_balancer.config.job_entry import JobConfig
from process_balancer.config.schema import ConfigError, load_config, settings_from
from process_balancer.runtime.manager import Manager


def snapshot(partitions: dict[str, Partition], now: float | None = 1700000000.5) -> GroupSnapshot:
    return GroupSnapshot(1, 0, [], {}, {}, {}, now=now, partitions=partitions)


def test_a_count_that_stays_keeps_its_generation_and_a_change_takes_the_next() -> None:
    stored = {"a": Partition(3, 7), "b": Partition(2, 4)}
    result = next_partitions(snapshot(stored), {"a": 3, "b": 5})
    assert result == {"a": Partition(3, 7), "b": Partition(5, 5)}


def test_a_new_job_starts_past_every_generation_it_may_have_had() -> None:
    # At the backend's clock in milliseconds: a lost entry never comes back lower.
    assert next_partitions(snapshot({}), {"a": 2}) == {"a": Partition(2, 1700000000500)}
    assert next_partitions(snapshot({}, now=None), {"a": 2}) == {"a": Partition(2, 1)}


def test_a_job_nobody_counts_any_more_keeps_its_entry() -> None:
    stored = {"gone": Partition(4, 9)}
    assert next_partitions(snapshot(stored), {})["gone"] == Partition(4, 9)


def test_rebalance_stores_the_partitions_and_heartbeats_return_them(namespace: str) -> None:
    backend = MemoryBackend(f"memory://{namespace}", namespace)
    traits = {"capacity": 4, "active": True, "jobs": ["q"], "defaults": {"q": 2}}
    backend.heartbeat("p", traits=traits, info={}, expiry=5, seen_assignment_version=-1)
    written = rebalance(backend)
    assert written is not None
    _, _, partitions = written
    first = partitions["q"]
    assert first.count == 2
    assert backend.heartbeat(
        "p", traits=traits, info={}, expiry=5, seen_assignment_version=-1
    ).partitions == {"q": first}
    backend.set_count("q", to=3, by=None, default=2)
    rebalance(backend)
    assert backend.snapshot().partitions == {"q": Partition(3, first.generation + 1)}
    backend.close()


def write(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "pb.yml"
    text = "jobs:\n  q:\n    class: m:C\n" + textwrap.indent(textwrap.dedent(extra), "    ")
    path.write_text(text, encoding="utf-8")
    return path


def test_the_partitioned_option_is_read(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), environ={}).jobs["q"].partitioned is None
    config = load_config(write(tmp_path, "partitioned: true\n"), environ={})
    assert config.jobs["q"].partitioned is True


def test_a_partitioned_option_that_is_not_a_boolean_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "partitioned: 'yes'\n"), environ={})
    (problem,) = caught.value.problems
    assert "jobs.q.partitioned" in problem and "must be true or false" in problem


class NoGate(LockDriver):
    """A lock driver that cannot take its lock under a generation."""

    def try_acquire(self) -> int | None:
        return 1

    def renew(self) -> bool:
        return True

    def release(self) -> None:
        pass


class Tenants(Base):
    partitioned = True
    lock_driver = NoGate

    def lock_records(self) -> list[int]:
        return []

    def process_record(self, record: Any) -> None:
        pass

    def unlock_records(self) -> None:
        pass


@pytest.fixture
def settings(namespace: str) -> Iterator[Any]:
    url = f"memory://{namespace}"
    job = JobConfig(
        job_id="t",
        class_path="m:Tenants",
        workers=2,
        runtime_lock_timeout=5.0,
        lock_acquire_timeout=5.0,
        options={},
    )
    yield replace(settings_from(backend=url, namespace=namespace), jobs={"t": job})


def test_a_partitioned_job_needs_a_lock_driver_that_takes_a_gate(settings: Any) -> None:
    backend = MemoryBackend(settings.backend, settings.namespace)
    with pytest.raises(ValueError, match=r"job 't' is partitioned.*NoGate does not"):
        Manager(settings, {"t": Tenants}, backend, handle_signals=False)
    # The job's option overrides its class.
    plain = replace(settings, jobs={"t": replace(settings.jobs["t"], partitioned=False)})
    Manager(plain, {"t": Tenants}, backend, handle_signals=False)
    backend.close()


class Sharded(Base):
    """A partitioned job whose records run until told to stop, logging what it saw."""

    partitioned = True
    seen: list[tuple[int, int, int | None, int | None]] = []
    gate = threading.Event()

    def lock_records(self) -> range:
        Sharded.seen.append((self.worker_index, 0, self.worker_count, self.generation))
        return range(1000)

    def process_record(self, record: int) -> None:
        time.sleep(0.005)

    def unlock_records(self) -> None:
        Sharded.seen.append((self.worker_index, 1, self.worker_count, self.generation))


def test_a_new_count_cuts_the_old_generation_at_a_record_and_starts_the_new(
    settings: Any,
) -> None:
    """One process on the in-memory backend: a resize from 2 to 3 cuts both running
    iterations of the old generation (unlock_records runs, long before their 1000 records
    are done) before any of the new starts."""
    settings = replace(settings, heartbeat_interval=0.05)
    backend = MemoryBackend(settings.backend, settings.namespace)
    manager = Manager(settings, {"t": Sharded}, backend, handle_signals=False)
    runner = threading.Thread(target=manager.run)
    runner.start()
    try:
        deadline = time.time() + 10
        while len({s[0] for s in Sharded.seen if s[2] == 2}) < 2 and time.time() < deadline:
            time.sleep(0.01)
        resized = time.time()
        backend.set_count("t", to=3, by=None, default=2)
        while len({s[0] for s in Sharded.seen if s[2] == 3}) < 3 and time.time() < deadline:
            time.sleep(0.01)
        took = time.time() - resized
    finally:
        manager.request_stop()
        runner.join(10)
        backend.close()
    events = list(Sharded.seen)
    new_start = min(i for i, s in enumerate(events) if s[1] == 0 and s[2] == 3)
    old = [i for i, s in enumerate(events) if s[2] == 2]
    assert len({s[0] for s in events if s[2] == 3}) == 3
    # Both old iterations ended (unlock_records) before the first new one began.
    assert [events[i][:2] for i in old if events[i][1] == 1] and max(old) < new_start
    assert {s[3] for s in events if s[2] == 3} == {events[new_start][3]}
    assert events[new_start][3] > events[0][3]  # type: ignore[operator]
    # Cut at a record boundary: an old iteration left to its end takes 5 s.
    assert took < 2.5


def test_unreadable_partitions_are_rewritten_and_the_partitioned_job_runs_again(
    settings: Any,
) -> None:
    """Garbage in the stored partitions does not stop heartbeats: the process asks for a new
    assignment, which stores readable ones, and the partitioned job runs under them."""
    settings = replace(settings, heartbeat_interval=0.05)
    backend = MemoryBackend(settings.backend, settings.namespace)
    manager = Manager(settings, {"t": Sharded}, backend, handle_signals=False)
    runner = threading.Thread(target=manager.run)
    runner.start()
    try:
        deadline = time.time() + 10
        while len({s[0] for s in Sharded.seen if s[2] == 2}) < 2 and time.time() < deadline:
            time.sleep(0.01)
        with backend._group() as (group, _):
            group.partitions = "\x00garbage{["
            # The assignment stays current: nothing but this process's reading of the garbage
            # can start a new one. It reads its slots (and the partitions) again.
            manager._seen_assignment_version = -1
        Sharded.seen.clear()
        while time.time() < deadline:
            stored = backend.snapshot().partitions
            if stored and {s[0] for s in Sharded.seen if s[1] == 0} == {0, 1}:
                break
            time.sleep(0.01)
        stored = backend.snapshot().partitions
    finally:
        manager.request_stop()
        runner.join(10)
        backend.close()
    assert stored["t"].count == 2
    assert {s[0] for s in Sharded.seen if s[1] == 0} == {0, 1}
