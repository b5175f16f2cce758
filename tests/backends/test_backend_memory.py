"""What is particular to the in-memory backend: stores shared by name inside this process, a
clock the test moves by hand (no sleeping), forgetting everything on purpose, wake-ups by
condition variable. The contract it shares with the others is in test_backend_contract.py."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

import process_balancer
from process_balancer.backends import BackendError, HeartbeatResult, open_backend
from process_balancer.backends.memory.backend import ManualClock, MemoryBackend, store_name, wipe
from process_balancer.backends.memory.store import EVENTS_KEPT, discard
from process_balancer.config.schema import load_config, settings_from
from process_balancer.runtime.manager import Manager
from support.harness import wait_until, write_config

TRAITS = {"capacity": 4, "active": True, "jobs": ["j"], "defaults": {"j": 2}, "started_at": 1.0}


@pytest.fixture
def url() -> Iterator[str]:
    name = f"pbtest-{uuid.uuid4().hex[:12]}"
    yield f"memory://{name}"
    discard(name)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_000.0)


@pytest.fixture
def backend(url: str, clock: ManualClock) -> Iterator[MemoryBackend]:
    b = MemoryBackend(url, "ns", clock=clock)
    yield b
    b.close()


def beat(
    backend: MemoryBackend, identity: str, expiry: float = 3.0, known: str = "", hold: float = 0.0
) -> HeartbeatResult:
    return backend.heartbeat(
        identity,
        traits=TRAITS,
        info={},
        expiry=expiry,
        seen_assignment_version=-1,
        known_incarnation=known,
        hold=hold,
    )


# -- stores, names, namespaces -----------------------------------------------------------------


def test_backends_opened_with_one_name_share_one_group(url: str, backend: MemoryBackend) -> None:
    other = open_backend(url, "ns")
    assert isinstance(other, MemoryBackend) and other.store is backend.store
    beat(backend, "a")
    beat(other, "b")
    assert [m.identity for m in backend.snapshot().members] == ["a", "b"]
    assert other.clock is backend.clock  # the store's clock, set by its first backend


def test_namespaces_and_names_keep_groups_apart(url: str, backend: MemoryBackend) -> None:
    beat(backend, "a")
    assert MemoryBackend(url, "other").snapshot().members == []
    elsewhere = f"{url}-2"
    try:
        assert MemoryBackend(elsewhere, "ns").snapshot().members == []
    finally:
        discard(store_name(elsewhere))


def test_a_store_keeps_the_clock_it_was_created_with(url: str, backend: MemoryBackend) -> None:
    with pytest.raises(ValueError, match="another clock"):
        MemoryBackend(url, "ns", clock=ManualClock())
    assert MemoryBackend(url, "ns", clock=backend.clock).store is backend.store


def test_url_names() -> None:
    assert store_name("memory://tests") == "tests"
    assert store_name("MEMORY://a/b/") == "a/b"
    assert store_name("memory://") == "default"
    with pytest.raises(ValueError):
        store_name("redis://x")


def test_operations_from_many_threads_are_atomic(url: str, backend: MemoryBackend) -> None:
    backends = [MemoryBackend(url, "ns") for _ in range(8)]

    def scale(b: MemoryBackend, n: int) -> None:
        beat(b, f"p{n}")
        for _ in range(50):
            b.set_count("j", to=None, by=1, default=0)

    threads = [threading.Thread(target=scale, args=(b, n)) for n, b in enumerate(backends)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert backend.get_count("j") == 400
    # One version per change: 8 joins and 400 counts.
    assert backend.snapshot().version == 408


def test_a_closed_backend_refuses_calls_and_leaves_the_store_to_the_others(
    url: str, backend: MemoryBackend
) -> None:
    other = MemoryBackend(url, "ns")
    beat(other, "a")
    other.close()
    with pytest.raises(BackendError, match="closed"):
        other.snapshot()
    assert [m.identity for m in backend.snapshot().members] == ["a"]


# -- the clock drives every expiry ---------------------------------------------------------------


def test_the_manual_clock_expires_members_without_sleeping(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    beat(backend, "a", expiry=3.0)
    assert beat(backend, "b", expiry=30.0).next_expiry == pytest.approx(3.0)
    clock.advance(2.999)
    assert not beat(backend, "b", expiry=30.0).changed
    clock.advance(0.001)  # the deadline itself: expired, as on Redis
    result = beat(backend, "b", expiry=30.0)
    assert result.changed and result.next_expiry is None
    assert [m.identity for m in backend.snapshot().members] == ["b"]
    assert backend.snapshot().now == clock()


def test_lock_ttl_and_takeover_grace_follow_the_clock(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    beat(backend, "a", expiry=3.0)
    beat(backend, "b", expiry=60.0)
    held = backend.lock_acquire("j:0", "a", 10.0, grace=1.0)
    assert held is not None and held.fence >= int(clock() * 1_000_000)
    clock.advance(3.5)  # a's membership expired, the grace has not passed
    beat(backend, "b", expiry=60.0)  # prunes a, remembering its deadline
    assert backend.lock_acquire("j:0", "b", 10.0, grace=1.0) is None
    clock.advance(0.5)
    taken = backend.lock_acquire("j:0", "b", 10.0, grace=1.0)
    assert taken is not None and taken.fence > held.fence
    assert not backend.lock_renew("j:0", held.token, 10.0)
    # Renewed to ttl + grace from now; expired once that has passed.
    assert backend.lock_renew("j:0", taken.token, 2.0, grace=1.0)
    clock.advance(3.0)
    assert not backend.lock_renew("j:0", taken.token, 2.0, grace=1.0)
    assert not backend.lock_release("j:0", taken.token)


def test_commands_and_acknowledgements_expire_on_the_clock(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    beat(backend, "a", expiry=3600.0)
    assert backend.send_command("a", {"command": "quiet", "id": "c1"})
    backend.ack_command("b", "c1", 12.5)
    clock.advance(599.0)
    backend.ack_command("c", "c1", 13.5)  # renews the expiry of every acknowledgement of c1
    assert backend.command_acks("c1") == {"b": 12.5, "c": 13.5}
    clock.advance(2.0)  # the command waited 601 s: dropped unread
    assert beat(backend, "a", expiry=3600.0).commands == []
    assert backend.command_acks("c1") == {"b": 12.5, "c": 13.5}
    clock.advance(599.0)
    assert backend.command_acks("c1") == {}


def test_a_manager_sees_a_jump_of_the_manual_clock_as_a_step_of_the_server_clock(
    url: str, backend: MemoryBackend, clock: ManualClock
) -> None:
    settings = settings_from(backend="sqlite:///unused.sqlite3", namespace="ns")
    manager = Manager(settings, {}, backend, handle_signals=False)
    manager._beat()
    first = manager.incarnation
    clock.advance(0.2)
    manager._beat()
    assert manager.incarnation == first
    clock.advance(20.0)
    manager._beat()
    assert manager.incarnation != first


def test_a_process_takes_its_slots_from_a_new_incarnation_whose_versions_met_its_own(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    # The backend forgets the group. The process's first heartbeat there is applied but its
    # answer is lost; the new incarnation counts versions from 0 again and reaches the very
    # assignment version the process had seen in the old one. It must still read its slots
    # of the new incarnation instead of keeping the old ones.
    settings = settings_from(backend="sqlite:///unused.sqlite3", namespace="ns")
    manager = Manager(settings, {}, backend, identity="m", handle_signals=False)
    manager._beat()
    backend.set_count("j", to=5, by=None, default=1)
    version = backend.snapshot().version
    assert backend.write_assignment(version, {"m": {"j": (4,)}}, {})
    manager._beat()
    assert manager._slots == {"j": (4,)}
    seen = manager._seen_assignment_version
    backend.wipe()
    lost = backend.heartbeat(
        "m",
        traits=manager._traits(),
        info={},
        expiry=3.0,
        seen_assignment_version=seen,
        known_incarnation=manager.incarnation,
    )
    assert lost.version <= seen
    while backend.snapshot().version < seen:
        backend.set_count("j", to=2, by=None, default=1)
    assert backend.write_assignment(seen, {"m": {"j": (0, 1)}}, {})
    clock.advance(0.1)
    manager._beat()  # the new incarnation: it had seen this version number in the old one
    manager._beat()
    assert manager._slots == {"j": (0, 1)}


# -- forgetting everything -----------------------------------------------------------------------


def test_wipe_forgets_the_group_and_begins_a_new_incarnation(
    url: str, backend: MemoryBackend, clock: ManualClock
) -> None:
    first = beat(backend, "a", known="", hold=4.0)
    backend.set_count("j", to=3, by=None, default=1)
    held = backend.lock_acquire("j:0", "a", 30.0)
    assert held is not None
    wipe(store_name(url))
    assert backend.snapshot().members == [] and backend.get_count("j") is None
    assert backend.lock_acquire("j:0", "a", 30.0) is None  # no heartbeat since
    again = beat(backend, "a", known=first.incarnation, hold=4.0)
    assert again.incarnation != first.incarnation
    assert "no longer has the group state" in again.new_incarnation
    clock.advance(3.9)
    assert backend.lock_acquire("j:0", "a", 30.0) is None
    clock.advance(0.1)
    taken = backend.lock_acquire("j:0", "a", 30.0)
    # The counter was lost; the clock in microseconds keeps tokens increasing.
    assert taken is not None and taken.fence > held.fence


def test_a_newcomer_first_after_a_wipe_holds_locks_back_too(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    beat(backend, "old", known="")
    backend.wipe()
    clock.advance(1.0)
    result = beat(backend, "new", known="", hold=3.0)
    assert "wiped" in result.new_incarnation
    # Held back for the whole hold from that heartbeat, as on a server that just started.
    clock.advance(2.9)
    assert backend.lock_acquire("j:0", "new", 5.0) is None
    clock.advance(0.1)
    assert backend.lock_acquire("j:0", "new", 5.0) is not None
    # Long after a wipe, a new group starts at once, as on a server up for a while.
    backend.wipe()
    clock.advance(10.0)
    assert beat(backend, "new", known="", hold=3.0).new_incarnation == ""


def test_a_restart_with_an_older_state_grants_no_lock_before_a_new_incarnation(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    # "a" holds j:0 and keeps heartbeating; the server then restarts with a copy of its state
    # taken 5 s ago, in which a's membership has long expired. Until a heartbeat has begun a
    # new incarnation (and its hold is over), "b" must not take the slot over: "a" runs it.
    import copy

    first = beat(backend, "a", known="", hold=3.0)
    beat(backend, "b", known=first.incarnation)
    held = backend.lock_acquire("j:0", "a", 30.0)
    assert held is not None
    old_copy = copy.deepcopy(backend.store.groups)
    clock.advance(5.0)
    beat(backend, "a", known=first.incarnation, hold=3.0)
    backend.store.restart(old_copy)
    assert backend.lock_acquire("j:0", "b", 30.0) is None
    after = beat(backend, "b", known=first.incarnation, hold=3.0)
    assert "server changed" in after.new_incarnation
    assert backend.lock_acquire("j:0", "b", 30.0) is None
    clock.advance(3.0)
    taken = backend.lock_acquire("j:0", "b", 30.0)
    assert taken is not None and taken.fence > held.fence


# -- wake-ups, inspection, repair ----------------------------------------------------------------


def test_listeners_get_the_events_the_others_publish(url: str, backend: MemoryBackend) -> None:
    received: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(target=backend.listen, args=(received.append, stop))
    thread.start()
    other_namespace = MemoryBackend(url, "other")
    try:
        wait_until(lambda: received == ["subscribed"], 5, message="the listener to start")
        version = beat(backend, "a").version
        beat(other_namespace, "x")  # another group: not heard here
        backend.write_assignment(version, {"a": {"j": (0,)}}, {})
        backend.send_command("a", {"command": "dump"})
        held = backend.lock_acquire("j:0", "a", 5.0)
        assert held is not None and backend.lock_release("j:0", held.token)
        wait_until(lambda: len(received) >= 5, 5, message="every event")
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
    assert received == ["subscribed", "state", "assignment", "command a", "released j:0"]
    assert backend.store.listeners == {}


def test_a_listener_that_stops_leaves_the_others_subscribed(backend: MemoryBackend) -> None:
    # Both listeners' pending lists are empty (equal) when the second one stops: it must remove
    # its own list, not the first equal one.
    first: list[str] = []
    second: list[str] = []
    stops = [threading.Event(), threading.Event()]
    threads = [
        threading.Thread(target=backend.listen, args=(received.append, stop))
        for received, stop in zip((first, second), stops, strict=True)
    ]
    try:
        threads[0].start()
        wait_until(lambda: first == ["subscribed"], 5, message="the first listener")
        threads[1].start()
        wait_until(lambda: second == ["subscribed"], 5, message="the second listener")
        stops[1].set()
        threads[1].join(5)
        backend.set_count("j", to=2, by=None, default=1)
        wait_until(lambda: first == ["subscribed", "state"], 5, message="the first to hear it")
    finally:
        for stop, thread in zip(stops, threads, strict=True):
            stop.set()
            if thread.is_alive():
                thread.join(5)


def test_a_listener_far_behind_is_told_to_read_the_state_afresh(backend: MemoryBackend) -> None:
    pending: list[str] = []
    with backend.store.lock:
        backend.store.listeners["ns"].append(pending)
    for n in range(EVENTS_KEPT + 5):
        backend.set_count("j", to=n % 10, by=None, default=1)
    assert len(pending) <= EVENTS_KEPT and pending[0] == "assignment"


def test_inspect_finds_nothing_and_repair_rebuilds(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    version = beat(backend, "a").version
    backend.write_assignment(version, {"a": {"j": (0,)}}, {"j": (1,)})
    backend.set_count("j", to=2, by=None, default=1)
    backend.pause("j", default=1)
    assert backend.inspect().problems == []
    report = backend.repair(apply=False)
    assert not report.applied and backend.snapshot().assignment == {"a": {"j": [0]}}
    report = backend.repair(apply=True)
    after = backend.snapshot()
    assert report.applied and report.counts == {"j": 0} and report.paused == {"j": 2}
    assert after.version == int(clock() * 1000) and after.assignment_version == 0
    assert after.assignment == {} and backend.unplaced() == {}
    assert [m.identity for m in after.members] == ["a"]


def test_repair_removes_what_cannot_be_read(backend: MemoryBackend) -> None:
    beat(backend, "a")
    with backend.store.lock:
        group = backend.store.group("ns")
        group.traits["a"] = "not json"
        group.counts["j"] = "many"
    problems = backend.inspect().problems
    assert sorted(p.part for p in problems) == ["counts", "traits"]
    assert all(p.where.startswith(f"{backend.url} ns:") for p in problems)
    backend.repair(apply=True)
    assert backend.inspect().problems == [] and backend.get_count("j") is None


def test_a_lock_held_on_the_real_clock_expires_in_real_time(url: str) -> None:
    """The default clock is time.time: a sleep expires a lock as on the other backends."""
    name = f"{store_name(url)}-real"
    try:
        real = MemoryBackend(f"memory://{name}", "ns")
        beat(real, "a")
        assert real.lock_acquire("j:0", "a", 0.05) is not None
        assert real.lock_acquire("j:0", "b", 5.0) is None
        time.sleep(0.1)
        assert real.lock_acquire("j:0", "b", 5.0) is not None
    finally:
        discard(name)


# -- two "processes" in one interpreter ----------------------------------------------------------


class SlotJob(process_balancer.Base):
    """Records which manager ran which slot; a record takes 10 ms."""

    runs: ClassVar[set[tuple[str, int]]] = set()

    def lock_records(self) -> list[int]:
        SlotJob.runs.add((self.options["owner"], self.worker_index))
        return [0]

    def process_record(self, record: int) -> None:
        time.sleep(0.01)

    def unlock_records(self) -> None:
        pass


def test_two_managers_in_one_interpreter_share_the_slots(url: str, tmp_path: Path) -> None:
    SlotJob.runs.clear()
    managers = []
    for owner in ("m1", "m2"):
        jobs = {"j": {"class": f"{__name__}:SlotJob", "workers": 4, "owner": owner}}
        # A config file cannot name memory://; the backend is handed to the manager instead.
        config = write_config(
            tmp_path / f"{owner}.yml", backend="sqlite:///unused.sqlite3", namespace="ns", jobs=jobs
        )
        backend = MemoryBackend(url, "ns")
        managers.append(Manager(load_config(config), {"j": SlotJob}, backend, handle_signals=False))
    threads = [threading.Thread(target=m.run) for m in managers]
    for thread in threads:
        thread.start()
    try:
        wait_until(
            lambda: (
                {i for _, i in SlotJob.runs} == {0, 1, 2, 3}
                and {o for o, _ in SlotJob.runs} == {"m1", "m2"}
            ),
            15,
            message="both managers to run slots",
        )
        assignment = managers[0].backend.snapshot().assignment
        assert sorted(len(slots["j"]) for slots in assignment.values()) == [2, 2]
    finally:
        for manager in managers:
            manager.request_stop()
        for thread in threads:
            thread.join(15)
    assert not any(thread.is_alive() for thread in threads)
    assert managers[0].backend.snapshot().members == []


def test_a_takeover_of_the_autoscaling_lock_is_logged_as_such(
    backend: MemoryBackend, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    beat(backend, "a", expiry=1.0)
    assert backend.lock_acquire("q:autoscale", "a", 30.0) is not None
    assert backend.lock_acquire("q:0", "a", 30.0) is not None
    clock.advance(2.0)
    beat(backend, "b", expiry=30.0)
    with caplog.at_level(logging.WARNING, logger="process_balancer"):
        assert backend.lock_acquire("q:autoscale", "b", 30.0) is not None
        assert backend.lock_acquire("q:0", "b", 30.0) is not None
    messages = [r.getMessage() for r in caplog.records]
    assert "autoscaling of job q taken over from a, whose membership has expired" in messages
    assert "worker lock q:0 taken over from a, whose membership has expired" in messages
