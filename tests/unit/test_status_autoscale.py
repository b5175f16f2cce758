"""Autoscaling in the status document and its table, from what the processes publish."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from process_balancer.backends import GroupSnapshot, MemberState
from process_balancer.cli.status_table import render
from process_balancer.client.status import build_status

NOW = 1_700_000_000.0
BOUNDS = {"min": 1, "max": 8, "interval": 15.0, "cooldown": 60.0}


def member(identity: str, started_at: float = NOW - 3600, **info: Any) -> MemberState:
    traits = {"capacity": 4, "active": True, "jobs": ["q"], "defaults": {"q": 2}}
    return MemberState(
        identity, NOW + 2.5, {**traits, "started_at": started_at}, {"heartbeat_at": NOW, **info}
    )


def scaling(identity: str, published: object, started_at: float = NOW - 3600) -> MemberState:
    return member(identity, started_at, autoscale=published)


def snapshot(members: list[MemberState]) -> GroupSnapshot:
    return GroupSnapshot(5, 5, members, {}, {}, {}, NOW)


def entry(evaluating: bool, last: dict[str, Any] | None = None, change: Any = None) -> dict:
    return {"q": {**BOUNDS, "evaluating": evaluating, "last": last, "last_change": change}}


SCALED = {"at": NOW - 5, "action": "scaled", "desired": 7, "target": 7, "count": 7}


def test_the_job_shows_its_bounds_evaluator_last_decision_and_change() -> None:
    older = {"at": NOW - 100, "from": 2, "to": 4}
    newer = {"at": NOW - 5, "from": 4, "to": 7}
    members = [
        scaling("a:1", entry(False, {**SCALED, "at": NOW - 100}, older), started_at=NOW - 9000),
        scaling("b:2", entry(True, SCALED, newer)),
    ]
    job = build_status(snapshot(members), now=NOW)["jobs"]["q"]
    assert job["autoscale"] == {
        "state": "evaluating",
        "min": 1,
        "max": 8,
        "interval": 15.0,
        "cooldown": 60.0,
        "evaluator": "b:2",
        "last": {**SCALED, "by": "b:2", "error": None},
        "last_change": {**newer, "by": "b:2"},
    }


def test_a_paused_job_says_the_autoscaler_leaves_it_alone() -> None:
    paused = {"at": NOW - 1, "action": "paused", "desired": 5}
    status = build_status(snapshot([scaling("a:1", entry(True, paused))]), now=NOW, paused={"q": 3})
    assert status["jobs"]["q"]["autoscale"]["state"] == "paused"
    console = Console(width=240, record=True, color_system=None)
    console.print(render(status))
    assert "nothing changed: the job is paused (desired 5)" in console.export_text()


def test_a_job_nobody_autoscales_has_none_and_no_table() -> None:
    status = build_status(snapshot([member("a:1")]), now=NOW)
    assert status["jobs"]["q"]["autoscale"] is None
    console = Console(width=240, record=True, color_system=None)
    console.print(render(status))
    assert "Autoscaling" not in console.export_text()


def test_garbage_a_process_published_reads_as_unknown() -> None:
    members = [
        scaling("a:1", "not a mapping"),
        scaling("b:2", {"q": {"min": "x", "evaluating": "yes", "last": {"at": "then"}}}),
    ]
    scaled = build_status(snapshot(members), now=NOW)["jobs"]["q"]["autoscale"]
    assert scaled["state"] == "waiting"
    assert scaled["min"] is None and scaled["evaluator"] is None and scaled["last"] is None
    console = Console(width=240, record=True, color_system=None)
    console.print(render(build_status(snapshot(members), now=NOW)))
    assert "Autoscaling" in console.export_text()


def test_the_table_shows_who_decided_what_and_when() -> None:
    change = {"at": NOW - 5, "from": 4, "to": 7}
    status = build_status(snapshot([scaling("b:2", entry(True, SCALED, change))]), now=NOW)
    console = Console(width=240, record=True, color_system=None)
    console.print(render(status))
    text = console.export_text()
    assert "1..8, every 15s, cooldown 1m00s" in text
    assert "set 7 (desired 7)" in text and "5.0s ago by b:2" in text
    assert "4 -> 7, 5.0s ago" in text


def test_the_dashboard_shows_the_bounds_state_and_last_decision() -> None:
    pytest.importorskip("starlette")
    from process_balancer.web.app import render_live

    status = build_status(snapshot([scaling("b:2", entry(True, SCALED))]), now=NOW)
    tables = render_live(status, None, actions=False)["tables"]
    assert 'data-test="autoscale"' in tables
    assert "autoscale 1..8 · evaluating · set 7 (desired 7) by b:2" in tables
