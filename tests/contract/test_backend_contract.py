"""The coordination backend contract: every backend (see BACKEND_KINDS in conftest.py) must
pass these tests against its real server, and the in-memory backend inside this process."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from process_balancer.backends import Backend, HeartbeatResult, open_backend
from process_balancer.config.defaults import MAX_WORKERS
from process_balancer.config.defaults import MAX_WORKERS_HARD_LIMIT as HARD_LIMIT

pytestmark = pytest.mark.backends(in_process=True)

TRAITS = {"capacity": 4, "active": True, "jobs": ["j"], "defaults": {"j": 2}, "started_at": 1.0}


@pytest.fixture
def backend(backend_url: str, namespace: str) -> Iterator[Backend]:
    b = open_backend(backend_url, namespace)
    yield b
    b.close()


def beat(
    backend: Backend,
    identity: str,
    expiry: float = 3.0,
    seen: int = -1,
    traits: dict[str, object] | None = None,
) -> HeartbeatResult:
    return backend.heartbeat(
        identity,
        traits=traits or TRAITS,
        info={"x": 1},
        expiry=expiry,
        seen_assignment_version=seen,
    )


def test_first_heartbeat_joins_and_bumps_the_version(backend: Backend) -> None:
    result = beat(backend, "a")
    assert result.joined and result.changed
    assert result.version == 1


def test_unchanged_heartbeat_leaves_the_version_alone(backend: Backend) -> None:
    beat(backend, "a")
    result = beat(backend, "a")
    assert not result.joined and not result.changed
    assert result.version == 1


def test_changed_traits_bump_the_version(backend: Backend) -> None:
    beat(backend, "a")
    result = beat(backend, "a", traits={**TRAITS, "active": False})
    assert result.changed and result.version == 2


def test_expired_member_is_pruned_by_a_peer_heartbeat(backend: Backend) -> None:
    beat(backend, "a", expiry=0.2)
    beat(backend, "b")
    time.sleep(0.3)
    result = beat(backend, "b")
    assert result.changed
    assert [m.identity for m in backend.snapshot().members] == ["b"]


def test_assignment_is_written_once_per_version(backend: Backend) -> None:
    version = beat(backend, "a").version
    assert backend.write_assignment(version, {"a": {"j": (0, 1)}}, {})
    assert not backend.write_assignment(version, {"a": {"j": (0,)}}, {})
    result = beat(backend, "a", seen=-1)
    assert result.slots == {"j": (0, 1)}
    assert beat(backend, "a", seen=result.assignment_version).slots is None


def test_stale_assignment_is_refused(backend: Backend) -> None:
    version = beat(backend, "a").version
    beat(backend, "b")
    assert not backend.write_assignment(version, {"a": {"j": (0,)}}, {})


def test_set_count_to_and_by(backend: Backend) -> None:
    assert backend.get_count("j") is None
    assert backend.set_count("j", to=None, by=3, default=2) == 5
    assert backend.set_count("j", to=1, by=None, default=2) == 1
    assert backend.get_count("j") == 1


def test_count_below_zero_is_refused_and_nothing_written(backend: Backend) -> None:
    backend.set_count("j", to=2, by=None, default=1)
    with pytest.raises(ValueError, match="below 0"):
        backend.set_count("j", to=None, by=-3, default=1)
    assert backend.get_count("j") == 2


def test_commands_reach_only_live_members_once(backend: Backend) -> None:
    beat(backend, "a")
    assert backend.send_command("a", {"command": "quiet"})
    assert not backend.send_command("ghost", {"command": "quiet"})
    assert beat(backend, "a").commands == [{"command": "quiet"}]
    assert beat(backend, "a").commands == []


def test_lock_is_exclusive_and_fencing_tokens_increase(backend: Backend) -> None:
    beat(backend, "a")
    beat(backend, "b")
    first = backend.lock_acquire("j:0", "a", 5)
    assert first is not None
    assert backend.lock_acquire("j:0", "b", 5) is None
    assert backend.lock_release("j:0", first.token)
    second = backend.lock_acquire("j:0", "b", 5)
    assert second is not None and second.fence > first.fence


def test_lock_of_an_expired_member_is_taken_over(backend: Backend) -> None:
    beat(backend, "dead", expiry=0.2)
    beat(backend, "b")
    assert backend.lock_acquire("j:0", "dead", 30) is not None
    assert backend.lock_acquire("j:0", "b", 30) is None
    time.sleep(0.3)
    assert backend.lock_acquire("j:0", "b", 30) is not None


def test_lock_expires_after_its_ttl(backend: Backend) -> None:
    beat(backend, "a")
    beat(backend, "b")
    assert backend.lock_acquire("j:0", "a", 0.2) is not None
    time.sleep(0.3)
    assert backend.lock_acquire("j:0", "b", 5) is not None


def test_leave_removes_the_member_at_once(backend: Backend) -> None:
    beat(backend, "a")
    beat(backend, "b")
    backend.leave("a")
    assert [m.identity for m in backend.snapshot().members] == ["b"]


def test_pause_remembers_the_count_and_sets_zero_in_one_step(backend: Backend) -> None:
    backend.set_count("j", to=5, by=None, default=2)
    version = backend.snapshot().version
    assert backend.pause("j", default=2) == 5
    assert backend.get_count("j") == 0
    assert backend.paused_counts() == {"j": 5}
    assert backend.snapshot().version == version + 1


def test_pause_without_a_runtime_count_remembers_the_default(backend: Backend) -> None:
    assert backend.pause("j", default=3) == 3
    assert backend.paused_counts() == {"j": 3}


def test_pausing_twice_keeps_the_first_remembered_count(backend: Backend) -> None:
    backend.set_count("j", to=4, by=None, default=1)
    backend.pause("j", default=1)
    assert backend.pause("j", default=1) is None
    assert backend.paused_counts() == {"j": 4}


def test_resume_restores_and_forgets_the_remembered_count(backend: Backend) -> None:
    backend.set_count("j", to=4, by=None, default=1)
    backend.pause("j", default=1)
    assert backend.resume("j") == 4
    assert backend.get_count("j") == 4
    assert backend.paused_counts() == {}
    assert backend.resume("j") is None


def test_setting_the_count_of_a_paused_job_ends_the_pause(backend: Backend) -> None:
    backend.pause("j", default=2)
    backend.set_count("j", by=1, to=None, default=2)
    assert backend.paused_counts() == {}
    assert backend.get_count("j") == 1


def test_snapshot_carries_the_backend_clock(backend: Backend) -> None:
    now = backend.snapshot().now
    assert now is not None and abs(now - time.time()) < 5


def test_unplaced_reads_the_stored_unplaced_slots(backend: Backend) -> None:
    assert backend.unplaced() == {}
    beat(backend, "a")
    version = backend.snapshot().version
    backend.write_assignment(version, {"a": {"j": (0,)}}, {"j": (1, 2)})
    assert backend.unplaced() == {"j": [1, 2]}


def test_heartbeat_reports_the_soonest_deadline_of_another_member(backend: Backend) -> None:
    assert beat(backend, "a").next_expiry is None
    beat(backend, "b", expiry=1.0)
    result = beat(backend, "a", expiry=30.0)
    assert result.next_expiry is not None and 0.5 < result.next_expiry <= 1.0


def test_renew_and_release_never_touch_another_holders_lock(backend: Backend) -> None:
    beat(backend, "a")
    beat(backend, "b")
    held = backend.lock_acquire("j:0", "a", 0.2)
    assert held is not None
    time.sleep(0.3)
    other = backend.lock_acquire("j:0", "b", 5)
    assert other is not None
    assert not backend.lock_renew("j:0", held.token, 5)
    assert not backend.lock_release("j:0", held.token)
    assert backend.lock_acquire("j:0", "a", 5) is None
    assert backend.lock_renew("j:0", other.token, 5)


# -- the group's incarnation, fencing across lost state, takeover grace -----------------------


def wipe(backend: Backend) -> None:
    """Make the backend forget the group entirely, as a Redis restarted without persistence
    (or a database restored from before the group existed) would, fencing counters included."""
    kind = type(backend).__name__
    if kind == "MemoryBackend":
        backend.wipe()  # type: ignore[attr-defined]
    elif kind == "RedisBackend":
        client = backend.client  # type: ignore[attr-defined]
        keys = list(client.scan_iter(match=f"{backend.namespace}:*"))
        if keys:
            client.delete(*keys)
    elif kind == "SQLiteBackend":
        with backend.db.transaction() as conn:  # type: ignore[attr-defined]
            for (table,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'pb_%'"
            ).fetchall():
                if table != "pb_events":
                    conn.execute(f"DELETE FROM {table}")
    else:
        with backend._pool.connection() as conn:  # type: ignore[attr-defined]
            for table in (
                "pb_groups",
                "pb_members",
                "pb_assignments",
                "pb_locks",
                "pb_departed",
                "pb_gates",
            ):
                conn.execute(
                    f"DELETE FROM {backend._s}.{table} WHERE namespace = %s",  # type: ignore[attr-defined]
                    (backend.namespace,),
                )


def beat_as(
    backend: Backend, identity: str, known: str, version: int = 0, hold: float = 30.0
) -> HeartbeatResult:
    return backend.heartbeat(
        identity,
        traits=TRAITS,
        info={},
        expiry=3.0,
        seen_assignment_version=-1,
        known_incarnation=known,
        known_version=version,
        hold=hold,
    )


def test_a_new_group_grants_locks_at_once(backend: Backend) -> None:
    result = beat_as(backend, "a", known="")
    assert result.incarnation and result.new_incarnation == ""
    assert result.server_time is not None and abs(result.server_time - time.time()) < 5
    assert backend.lock_acquire("j:0", "a", 5) is not None


def test_no_lock_is_granted_before_any_heartbeat_reached_the_backend(backend: Backend) -> None:
    assert backend.lock_acquire("j:0", "a", 5) is None


def test_a_backend_that_forgot_the_group_begins_an_incarnation_that_holds_locks_back(
    backend: Backend,
) -> None:
    first = beat_as(backend, "a", known="")
    held = backend.lock_acquire("j:0", "a", 30)
    assert held is not None
    wipe(backend)
    result = beat_as(backend, "b", known=first.incarnation, hold=0.5)
    assert result.incarnation != first.incarnation
    assert "no longer has the group state" in result.new_incarnation
    # The old holder may still run: nobody gets the lock until the hold is over.
    assert backend.lock_acquire("j:0", "b", 5) is None
    time.sleep(0.6)
    again = backend.lock_acquire("j:0", "b", 5)
    assert again is not None
    # Fencing tokens keep increasing although the counter was lost with the state.
    assert again.fence > held.fence


def test_a_state_older_than_a_process_has_seen_begins_a_new_incarnation(
    backend: Backend,
) -> None:
    first = beat_as(backend, "a", known="")
    result = beat_as(backend, "a", known=first.incarnation, version=first.version + 10, hold=0.5)
    assert result.incarnation != first.incarnation
    assert "older version" in result.new_incarnation
    assert backend.lock_acquire("j:0", "a", 5) is None
    # The next heartbeat, knowing the new incarnation, changes nothing.
    after = beat_as(backend, "a", known=result.incarnation, version=result.version, hold=0.5)
    assert after.incarnation == result.incarnation and after.new_incarnation == ""


def test_reset_incarnation_is_a_compare_and_set(backend: Backend) -> None:
    first = beat_as(backend, "a", known="")
    new = backend.reset_incarnation(first.incarnation, 0.5)
    assert new != first.incarnation
    assert backend.reset_incarnation(first.incarnation, 0.5) == new  # already replaced
    assert beat_as(backend, "a", known=new).incarnation == new
    assert backend.lock_acquire("j:0", "a", 5) is None
    time.sleep(0.6)
    assert backend.lock_acquire("j:0", "a", 5) is not None


def test_a_lock_of_an_earlier_incarnation_is_free_once_the_hold_is_over(
    backend: Backend,
) -> None:
    first = beat_as(backend, "a", known="")
    beat_as(backend, "b", known=first.incarnation)
    held = backend.lock_acquire("j:0", "a", 30)
    assert held is not None
    new = backend.reset_incarnation(first.incarnation, 0.3)
    time.sleep(0.4)
    beat_as(backend, "a", known=new)
    # "a" is live and named by the lock, but the lock belongs to the old incarnation.
    taken = backend.lock_acquire("j:0", "b", 5)
    assert taken is not None and taken.fence > held.fence
    assert not backend.lock_renew("j:0", held.token, 5)


def test_fencing_tokens_strictly_increase_per_slot(backend: Backend) -> None:
    beat(backend, "a")
    fences = []
    for _ in range(5):
        acquired = backend.lock_acquire("j:0", "a", 5)
        assert acquired is not None
        fences.append(acquired.fence)
        assert backend.lock_release("j:0", acquired.token)
    assert fences == sorted(set(fences))


def test_a_process_may_take_over_a_lock_naming_itself(backend: Backend) -> None:
    beat(backend, "a")
    beat(backend, "b")
    lost_answer = backend.lock_acquire("j:0", "a", 30)  # as if the answer never arrived
    assert lost_answer is not None
    again = backend.lock_acquire("j:0", "a", 30)
    assert again is not None and again.fence > lost_answer.fence
    assert backend.lock_acquire("j:0", "b", 30) is None
    assert not backend.lock_release("j:0", lost_answer.token)
    assert backend.lock_release("j:0", again.token)


def test_an_expired_holder_is_taken_over_only_after_the_grace(backend: Backend) -> None:
    beat(backend, "dead", expiry=0.2)
    beat(backend, "b")
    assert backend.lock_acquire("j:0", "dead", 30, grace=0.6) is not None
    time.sleep(0.3)
    beat(backend, "b")  # prunes "dead": its deadline is remembered for the grace
    assert [m.identity for m in backend.snapshot().members] == ["b"]
    assert backend.lock_acquire("j:0", "b", 30, grace=0.6) is None
    time.sleep(0.6)
    assert backend.lock_acquire("j:0", "b", 30, grace=0.6) is not None


def test_a_lock_key_outlives_its_ttl_by_the_grace(backend: Backend) -> None:
    beat(backend, "a")
    beat(backend, "b")
    assert backend.lock_acquire("j:0", "a", 0.2, grace=0.5) is not None
    time.sleep(0.3)
    assert backend.lock_acquire("j:0", "b", 5, grace=0.5) is None
    time.sleep(0.5)
    assert backend.lock_acquire("j:0", "b", 5, grace=0.5) is not None


# -- the worker-count ceiling ------------------------------------------------------------------
# The backend refuses what its callers should have refused already: these call it raw, as a
# client of another version or a script might, and check that nothing is written.


def unchanged(backend: Backend, version: int) -> bool:
    return (
        backend.get_count("j") is None
        and backend.paused_counts() == {}
        and backend.snapshot().version == version
    )


@pytest.mark.parametrize(
    "to", [10**23, 99999999999999999999999, 1e23, 2.5, 5.0, float("nan"), True, "3", -1, 11]
)
def test_a_count_that_is_not_an_integer_within_the_ceiling_is_refused(
    backend: Backend, to: object
) -> None:
    version = backend.snapshot().version
    with pytest.raises(ValueError, match=r"of job 'j' to .*from 0 to 10 \(max_workers\)"):
        backend.set_count("j", to=to, by=None, default=1, maximum=10)  # type: ignore[arg-type]
    assert unchanged(backend, version)


def test_the_refusal_names_the_job_the_value_and_the_ceiling(backend: Backend) -> None:
    with pytest.raises(ValueError) as caught:
        backend.set_count("j", to=99999999999999999999999, by=None, default=1, maximum=10_000)
    assert str(caught.value) == (
        "cannot set the worker count of job 'j' to 99999999999999999999999: a count must be an "
        "integer from 0 to 10,000 (max_workers); nothing was changed"
    )


@pytest.mark.parametrize("by", [10**23, 0.5, 1.0, True, "1"])
def test_a_change_that_is_not_an_integer_is_refused(backend: Backend, by: object) -> None:
    version = backend.snapshot().version
    with pytest.raises(ValueError, match=r"by .*: a change must be an integer"):
        backend.set_count("j", to=None, by=by, default=1, maximum=10)  # type: ignore[arg-type]
    assert unchanged(backend, version)


def test_a_change_whose_result_is_above_the_ceiling_is_refused(backend: Backend) -> None:
    backend.set_count("j", to=9, by=None, default=1, maximum=10)
    version = backend.snapshot().version
    with pytest.raises(ValueError, match=r"the result, 11, would be above its ceiling of 10"):
        backend.set_count("j", to=None, by=2, default=1, maximum=10)
    assert backend.get_count("j") == 9 and backend.snapshot().version == version
    assert backend.set_count("j", to=None, by=1, default=1, maximum=10) == 10


@pytest.mark.parametrize("default", [10**23, 2.5, -1, 11])
def test_a_default_that_is_not_a_count_is_refused(backend: Backend, default: object) -> None:
    version = backend.snapshot().version
    with pytest.raises(ValueError, match="default worker count of job 'j'"):
        backend.set_count("j", to=None, by=1, default=default, maximum=10)  # type: ignore[arg-type]
    assert unchanged(backend, version)


def test_the_ceiling_never_exceeds_the_hard_limit(backend: Backend) -> None:
    version = backend.snapshot().version
    with pytest.raises(ValueError, match="from 0 to 1,000,000"):
        backend.set_count("j", to=HARD_LIMIT + 1, by=None, default=1, maximum=10**12)
    assert unchanged(backend, version)
    assert backend.set_count("j", to=HARD_LIMIT, by=None, default=1, maximum=10**12) == HARD_LIMIT
    with pytest.raises(ValueError, match="would be above its ceiling of 1,000,000"):
        backend.set_count("j", to=None, by=1, default=1, maximum=10**12)
    assert backend.get_count("j") == HARD_LIMIT


def test_the_default_ceiling_is_max_workers(backend: Backend) -> None:
    assert backend.set_count("j", to=MAX_WORKERS, by=None, default=1) == MAX_WORKERS
    with pytest.raises(ValueError, match="above its ceiling of 10,000"):
        backend.set_count("j", to=None, by=1, default=1)


@pytest.mark.parametrize("default", [10**23, 2.5, -1])
def test_pause_refuses_a_default_that_is_not_a_count(backend: Backend, default: object) -> None:
    version = backend.snapshot().version
    with pytest.raises(ValueError, match="default worker count of job 'j'"):
        backend.pause("j", default=default, maximum=10)  # type: ignore[arg-type]
    assert unchanged(backend, version)


def test_pause_refuses_to_remember_a_count_above_the_ceiling(backend: Backend) -> None:
    backend.set_count("j", to=20, by=None, default=1, maximum=100)
    version = backend.snapshot().version
    with pytest.raises(ValueError, match=r"cannot pause job 'j': its count, 20, is above its"):
        backend.pause("j", default=1, maximum=10)
    assert backend.get_count("j") == 20 and backend.paused_counts() == {}
    assert backend.snapshot().version == version
    with pytest.raises(ValueError, match="above its ceiling of 10"):
        backend.pause("k", default=11, maximum=10)


def test_resume_refuses_a_remembered_count_above_the_ceiling(backend: Backend) -> None:
    backend.set_count("j", to=20, by=None, default=1, maximum=100)
    backend.pause("j", default=1, maximum=100)
    version = backend.snapshot().version
    with pytest.raises(ValueError, match=r"cannot resume job 'j' with 20 workers: .* of 10 "):
        backend.resume("j", maximum=10)
    assert backend.get_count("j") == 0 and backend.paused_counts() == {"j": 20}
    assert backend.snapshot().version == version
    assert backend.resume("j", maximum=20) == 20


# -- the rest of the interface: acknowledgements, clear_count, listen, inspect, repair -------


def test_acknowledgements_are_kept_per_command_and_process(backend: Backend) -> None:
    backend.ack_command("a", "c1", 100.5)
    backend.ack_command("b", "c1", 101.0)
    backend.ack_command("a", "c2", 102.0)
    assert backend.command_acks("c1") == {"a": 100.5, "b": 101.0}
    assert backend.command_acks("c2") == {"a": 102.0}
    assert backend.command_acks("never-sent") == {}


def test_clear_count_falls_back_to_the_config_count(backend: Backend) -> None:
    beat(backend, "a")
    backend.set_count("j", to=5, by=None, default=2)
    assert backend.get_count("j") == 5
    before = backend.snapshot().version
    backend.clear_count("j")
    assert backend.get_count("j") is None
    assert "j" not in backend.snapshot().counts
    assert backend.snapshot().version > before, "a cleared count is a change to rebalance on"
    backend.clear_count("never-set")  # nothing to clear is no error


def test_listen_delivers_state_assignment_commands_and_releases(backend: Backend) -> None:
    import threading

    events: list[str] = []
    stop = threading.Event()
    listener = threading.Thread(target=backend.listen, args=(events.append, stop), daemon=True)
    listener.start()
    try:
        deadline = time.monotonic() + 5
        while "subscribed" not in events and time.monotonic() < deadline:
            time.sleep(0.02)
        version = beat(backend, "a").version
        backend.write_assignment(version, {"a": {"j": (0,)}}, {})
        backend.send_command("a", {"command": "dump"})
        held = backend.lock_acquire("j:0", "a", 5)
        assert held is not None and backend.lock_release("j:0", held.token)
        wanted = {"state", "assignment", "command a", "released j:0"}
        while not wanted <= set(events) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert wanted <= set(events), events
    finally:
        stop.set()
        listener.join(5)
    assert not listener.is_alive(), "listen() did not return once stop was set"


def test_inspect_and_repair_of_a_sound_group_find_and_change_nothing(backend: Backend) -> None:
    version = beat(backend, "a").version
    backend.write_assignment(version, {"a": {"j": (0, 1)}}, {})
    backend.set_count("j", to=3, by=None, default=2)
    found = backend.inspect()
    assert found.problems == []
    assert [m.identity for m in found.snapshot.members] == ["a"]
    report = backend.repair(apply=False)
    assert report.counts == {"j": 3} and not report.applied
    assert backend.get_count("j") == 3
