"""Tags, placement rules and the reason for unplaced slots in the status, table and dashboard."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from process_balancer.backends import GroupSnapshot, MemberState
from process_balancer.balancing.rebalance import compute, job_placements
from process_balancer.cli.status_table import render
from process_balancer.client.status import build_status
from process_balancer.web.app import render_live

NOW = 1_700_000_000.0
GPU_RULE = {"train": {"require": ["gpu"], "prefer": [], "weight": 1}}


def member(identity: str, *, age: float = 60, **traits: Any) -> MemberState:
    base = {
        "capacity": 2,
        "active": True,
        "quiet": False,
        "stopping": False,
        "jobs": ["etl", "train"],
        "defaults": {"etl": 2, "train": 2},
        "hostname": identity.split(":")[0],
        "pid": int(identity.split(":")[1]),
        "started_at": NOW - age,
        "tags": [],
        "placement": GPU_RULE,
    }
    base.update(traits)
    return MemberState(identity, NOW + 2.5, base, {"heartbeat_at": NOW, "running": {}})


def snapshot(members: list[MemberState]) -> GroupSnapshot:
    snap = GroupSnapshot(5, 4, members, {}, {}, {}, NOW)
    result = compute(snap)
    return GroupSnapshot(
        5,
        5,
        members,
        {},
        {k: {j: list(v) for j, v in per.items()} for k, per in result.slots.items()},
        {j: list(v) for j, v in result.unplaced.items()},
        NOW,
    )


def text_of(status: dict[str, Any]) -> str:
    console = Console(width=240, record=True, color_system=None)
    console.print(render(status))
    return console.export_text()


def test_a_required_tag_nobody_has_leaves_the_job_unplaced_with_that_reason() -> None:
    status = build_status(snapshot([member("cpu:1:a"), member("cpu:2:b")]), now=NOW)
    job = status["jobs"]["train"]
    assert job["unplaced"] == [0, 1]
    assert job["require_tags"] == ["gpu"]
    assert job["unplaced_reason"]["code"] == "no_tags"
    assert job["unplaced_reason"]["message"].startswith("no live process has tag gpu")
    assert status["jobs"]["etl"]["unplaced_reason"] is None
    assert "no live process has tag gpu" in text_of(status)


def test_full_tagged_processes_are_reported_as_no_spare_capacity() -> None:
    gpu = member("gpu:1:a", tags=["gpu"], capacity=1)
    status = build_status(snapshot([gpu, member("cpu:2:b")]), now=NOW)
    job = status["jobs"]["train"]
    assert len(job["unplaced"]) == 1
    assert job["unplaced_reason"]["code"] == "no_capacity"
    assert "the only live process with tag gpu" in job["unplaced_reason"]["message"]


def test_tags_are_shown_per_process_and_the_rule_per_job() -> None:
    status = build_status(snapshot([member("gpu:1:a", tags=["ssd", "gpu"])]), now=NOW)
    assert status["processes"][0]["tags"] == ["gpu", "ssd"]
    text = text_of(status)
    assert "gpu, ssd" in text and "require gpu" in text
    tables = render_live(status, None, actions=False)["tables"]
    assert 'data-test="tags"' in tables and "requires gpu" in tables


def test_the_dashboard_shows_why_slots_are_unplaced() -> None:
    status = build_status(snapshot([member("cpu:1:a")]), now=NOW)
    tables = render_live(status, None, actions=False)["tables"]
    assert "no live process has tag gpu" in tables


def test_a_process_of_an_older_version_has_no_tags_and_no_say_in_the_rules() -> None:
    """The oldest member predates tags: it publishes neither tags nor placement, so the
    rule comes from the next oldest, and the old member never runs the gpu job."""
    old = member("old:1:a", age=600)
    del old.traits["tags"], old.traits["placement"]
    gpu = member("gpu:2:b", tags=["gpu"])
    assert job_placements([old, gpu])["train"].require == frozenset({"gpu"})
    snap = snapshot([old, gpu])
    assert snap.assignment["gpu:2:b"] == {"train": [0, 1]}
    assert build_status(snap, now=NOW)["processes"][0]["tags"] == []


def test_the_oldest_process_decides_the_rule_during_a_rolling_change() -> None:
    older = member("a:1:a", age=600, placement={})
    newer = member("b:2:b", age=10)
    assert "train" not in job_placements([older, newer])
    assert job_placements([member("a:1:a", age=5, placement={}), newer])["train"].require


def test_an_unreadable_rule_reads_as_no_rule() -> None:
    bad = member("a:1:a", placement={"train": {"require": "gpu", "weight": -1}})
    assert "train" not in {job_id for job_id, rule in job_placements([bad]).items() if rule.require}
