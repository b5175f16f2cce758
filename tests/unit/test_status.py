"""The status document built from a backend snapshot, and its table, without any server."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console

from process_balancer.backends import GroupSnapshot, MemberState
from process_balancer.cli.status_table import render
from process_balancer.client.format import duration, indexes
from process_balancer.client.status import SCHEMA, build_status

NOW = 1_700_000_000.0


def member(
    identity: str,
    *,
    started_at: float = NOW - 3600,
    jobs: tuple[str, ...] = ("q",),
    defaults: dict[str, int] | None = None,
    running: dict[str, list[int]] | None = None,
    slots: dict[str, dict[str, Any]] | None = None,
    heartbeat_at: float = NOW - 0.5,
    **traits: Any,
) -> MemberState:
    return MemberState(
        identity=identity,
        deadline=NOW + 2.5,
        traits={
            "capacity": 10,
            "active": True,
            "quiet": False,
            "stopping": False,
            "jobs": list(jobs),
            "defaults": defaults if defaults is not None else {"q": 4},
            "hostname": identity.split(":")[0],
            "pid": int(identity.split(":")[1]),
            "started_at": started_at,
            **traits,
        },
        info={"heartbeat_at": heartbeat_at, "running": running or {}, "slots": slots or {}},
    )


def running_slot(iteration_started: float | None = None, **fields: Any) -> dict[str, Any]:
    entry = {
        "state": "running",
        "restarts": 0,
        "last_error": None,
        "iterations": 10,
        "records": 100,
        "lock_losses": 0,
        "iteration_started": iteration_started,
    }
    entry.update(fields)
    return entry


def snapshot(members: list[MemberState], **kwargs: Any) -> GroupSnapshot:
    values: dict[str, Any] = {
        "version": 5,
        "assignment_version": 5,
        "members": members,
        "counts": {},
        "assignment": {},
        "unplaced": {},
        "now": NOW,
    }
    values.update(kwargs)
    return GroupSnapshot(**values)


def two_processes() -> GroupSnapshot:
    a = member(
        "web-1:100:aaaaaa",
        running={"q": [0, 1]},
        slots={
            "q:0": running_slot(NOW - 10),
            "q:1": running_slot(NOW - 400, records=7),
        },
    )
    b = member(
        "web-2:200:bbbbbb",
        started_at=NOW - 60,
        running={"q": [2]},
        slots={
            "q:2": running_slot(None),
            "q:3": {"state": "backoff", "restarts": 3, "last_error": "RuntimeError: boom"},
        },
    )
    return snapshot(
        [b, a],
        assignment={"web-1:100:aaaaaa": {"q": [0, 1]}, "web-2:200:bbbbbb": {"q": [2, 3]}},
    )


def test_the_document_has_a_schema_version_and_is_plain_json() -> None:
    status = build_status(two_processes(), now=NOW, namespace="ns", backend="redis://x")
    assert status["schema"] == SCHEMA == 1
    assert json.loads(json.dumps(status)) == status


def test_processes_are_listed_oldest_first_with_identity_host_pid_and_capacity() -> None:
    status = build_status(two_processes(), now=NOW)
    first, second = status["processes"]
    assert [first["identity"], second["identity"]] == ["web-1:100:aaaaaa", "web-2:200:bbbbbb"]
    assert (first["hostname"], first["pid"], first["capacity"]) == ("web-1", 100, 10)
    assert first["heartbeat_age"] == 0.5
    assert first["expires_in"] == 2.5
    assert first["state"] == "active"
    assert first["running"] == {"q": [0, 1]}
    assert second["assigned"] == {"q": [2, 3]}


def test_slots_carry_restarts_last_error_and_counters() -> None:
    second = build_status(two_processes(), now=NOW)["processes"][1]
    by_index = {s["index"]: s for s in second["slots"]}
    assert by_index[3]["restarts"] == 3
    assert by_index[3]["last_error"] == "RuntimeError: boom"
    assert by_index[3]["state"] == "backoff"
    assert by_index[2]["iterations"] == 10


def test_jobs_compare_scheduled_with_running_and_name_the_placement() -> None:
    job = build_status(two_processes(), now=NOW)["jobs"]["q"]
    assert (job["scheduled"], job["scheduled_from"], job["running"]) == (4, "config", 3)
    assert job["placement"] == {"web-1:100:aaaaaa": [0, 1], "web-2:200:bbbbbb": [2, 3]}
    assert job["processes"] == 2
    assert job["paused"] is False


def test_an_iteration_longer_than_stuck_after_is_stuck() -> None:
    status = build_status(two_processes(), now=NOW, stuck_after=300)
    stuck = status["jobs"]["q"]["stuck"]
    assert [(s["index"], s["identity"]) for s in stuck] == [(1, "web-1:100:aaaaaa")]
    assert stuck[0]["iteration_age"] == 399.5
    assert build_status(two_processes(), now=NOW, stuck_after=5)["jobs"]["q"]["stuck"] != stuck


def test_iteration_age_is_measured_on_the_process_clock_at_its_heartbeat() -> None:
    """The reader's clock may be off: age = heartbeat_at - iteration_started, both the
    process's own."""
    snap = snapshot([member("h:1:x", slots={"q:0": running_slot(NOW - 30)})])
    slot = build_status(snap, now=NOW + 10_000)["processes"][0]["slots"][0]
    assert slot["iteration_age"] == 29.5


def test_a_runtime_count_wins_over_the_config_and_paused_jobs_say_what_they_resume_to() -> None:
    snap = snapshot([member("h:1:x")], counts={"q": 0})
    job = build_status(snap, now=NOW, paused={"q": 6})["jobs"]["q"]
    assert (job["scheduled"], job["scheduled_from"]) == (0, "runtime")
    assert (job["paused"], job["resume_to"]) == (True, 6)


def test_unplaced_slots_come_from_the_stored_assignment() -> None:
    snap = snapshot([member("h:1:x")], unplaced={"q": [3, 2]})
    assert build_status(snap, now=NOW)["jobs"]["q"]["unplaced"] == [2, 3]


def test_a_job_no_live_process_runs_has_every_slot_unplaced() -> None:
    snap = snapshot([member("h:1:x")], counts={"orphan": 2})
    job = build_status(snap, now=NOW, config_workers={"other": None})["jobs"]
    assert job["orphan"]["unplaced"] == [0, 1]
    assert job["orphan"]["processes"] == 0
    assert (job["other"]["scheduled"], job["other"]["scheduled_from"]) == (1, "default")


def test_quiet_and_stopping_processes_say_so() -> None:
    snap = snapshot([member("h:1:x", quiet=True), member("h:2:y", stopping=True, quiet=True)])
    states = [p["state"] for p in build_status(snap, now=NOW)["processes"]]
    assert states == ["quiet", "stopping"]


def test_garbage_written_by_a_process_reads_as_unknown_not_as_a_crash() -> None:
    bad = MemberState(
        identity="h:1:x",
        deadline=NOW + 1,
        traits={"capacity": "lots", "jobs": "q", "pid": True, "started_at": "yesterday"},
        info={
            "heartbeat_at": None,
            "running": ["q"],
            "slots": {"nonsense": {}, "q:x": {}, "q:1": "running", "q:2": {"restarts": "3"}},
        },
    )
    proc = build_status(snapshot([bad]), now=NOW)["processes"][0]
    assert (proc["capacity"], proc["pid"], proc["jobs"], proc["running"]) == (None, None, [], {})
    assert [(s["index"], s["restarts"]) for s in proc["slots"]] == [(2, 0)]


def test_the_table_shows_processes_slots_jobs_and_stuck_slots() -> None:
    status = build_status(two_processes(), now=NOW, namespace="ns", backend="redis://x")
    console = Console(width=240, record=True, color_system=None)
    console.print(render(status))
    text = console.export_text()
    for expected in ("web-1:100:aaaaaa", "web-2", "RuntimeError: boom", "STUCK", "4 (config)"):
        assert expected in text
    assert "namespace ns" in text


LOOP = {
    "lag": 0.61,
    "stalls": 2,
    "slots": 3,
    "warn_after": 0.25,
    "last_stall": {"seconds": 0.6, "slot": "job poll worker 1", "where": "jobs.py:9", "at": NOW},
}


def with_loop(loop: object) -> MemberState:
    proc = member("web-1:100:aaaaaa", running={"poll": [0, 1, 2]})
    proc.info["event_loop"] = loop
    return proc


def test_an_asyncio_event_loop_reports_its_lag_and_last_stall() -> None:
    loop = build_status(snapshot([with_loop(LOOP)]), now=NOW)["processes"][0]["event_loop"]
    assert loop == {
        "lag": 0.61,
        "stalls": 2,
        "slots": 3,
        "warn_after": 0.25,
        "lagging": True,
        "last_stall": {
            "seconds": 0.6,
            "slot": "job poll worker 1",
            "where": "jobs.py:9",
            "at": NOW,
        },
    }
    calm = build_status(snapshot([with_loop({**LOOP, "lag": 0.002})]), now=NOW)
    assert calm["processes"][0]["event_loop"]["lagging"] is False
    garbage = build_status(snapshot([with_loop({"lag": "x", "last_stall": 3})]), now=NOW)
    assert garbage["processes"][0]["event_loop"]["lag"] is None
    assert build_status(two_processes(), now=NOW)["processes"][0]["event_loop"] is None


def test_the_table_shows_the_loop_lag_only_when_a_process_runs_an_event_loop() -> None:
    console = Console(width=240, record=True, color_system=None)
    console.print(render(build_status(snapshot([with_loop(LOOP)]), now=NOW)))
    text = console.export_text()
    assert "loop lag" in text and "610 ms" in text
    assert "2 stall(s), last by job poll worker 1" in text
    console = Console(width=240, record=True, color_system=None)
    console.print(render(build_status(two_processes(), now=NOW)))
    assert "loop lag" not in console.export_text()


def test_the_table_of_an_empty_group_says_so() -> None:
    console = Console(width=120, record=True, color_system=None)
    console.print(render(build_status(snapshot([]), now=NOW, namespace="ns")))
    assert "no live processes in namespace ns" in console.export_text()


def test_durations_and_index_ranges_read_compactly() -> None:
    assert [duration(x) for x in (None, 0.42, 12, 303, 7620, 273600)] == [
        "-",
        "0.4s",
        "12s",
        "5m03s",
        "2h07m",
        "3d04h",
    ]
    assert indexes([7, 0, 1, 2, 3, 9, 10]) == "0-3 7 9-10"
    assert indexes([]) == ""
