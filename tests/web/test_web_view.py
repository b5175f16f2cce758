"""The dashboard's pure parts without any server: throughput from slot counters, and the live
HTML built from a status document."""

from __future__ import annotations

import re
from typing import Any

import pytest

from process_balancer.backends import GroupSnapshot, MemberState
from process_balancer.client.status import build_status
from process_balancer.web.app import render_live
from process_balancer.web.sampler import Throughput

NOW = 1_700_000_000.0


def status(at: float, slots: dict[str, dict[str, tuple[int, int]]], jobs=("q",)) -> dict[str, Any]:
    """A minimal status document: identity -> {"job:index": (iterations, records)}."""
    return {
        "generated_at": at,
        "jobs": {job_id: {} for job_id in jobs},
        "processes": [
            {
                "identity": identity,
                "slots": [
                    {
                        "job": key.rpartition(":")[0],
                        "index": int(key.rpartition(":")[2]),
                        "iterations": counts[0],
                        "records": counts[1],
                    }
                    for key, counts in per_slot.items()
                ],
            }
            for identity, per_slot in slots.items()
        ],
    }


def test_the_first_reading_has_no_rate_the_second_has_per_minute_rates() -> None:
    throughput = Throughput()
    assert throughput.observe(status(NOW, {"a": {"q:0": (10, 100)}})) is None
    sample = throughput.observe(status(NOW + 30, {"a": {"q:0": (40, 400)}}))
    assert sample is not None
    assert sample.rates == {"q": (60.0, 600.0)}
    assert throughput.series() == [{"t": NOW + 30, "jobs": {"q": [60.0, 600.0]}}]


def test_restarted_workers_and_new_slots_count_from_zero() -> None:
    throughput = Throughput()
    throughput.observe(status(NOW, {"a": {"q:0": (100, 1000), "q:1": (50, 500)}}))
    sample = throughput.observe(
        status(NOW + 60, {"a": {"q:0": (5, 50), "q:1": (60, 600)}, "b": {"q:2": (7, 70)}})
    )
    assert sample is not None
    # q:0 restarted (5), q:1 moved on by 10, q:2 is new on process b (7)
    assert sample.rates["q"] == (22.0, 220.0)


def test_a_slot_moving_to_another_process_is_a_new_counter() -> None:
    throughput = Throughput()
    throughput.observe(status(NOW, {"a": {"q:0": (100, 100)}}))
    sample = throughput.observe(status(NOW + 60, {"b": {"q:0": (3, 3)}}))
    assert sample is not None and sample.rates["q"] == (3.0, 3.0)


def test_jobs_without_slots_report_zero_and_totals_add_up() -> None:
    throughput = Throughput()
    throughput.observe(status(NOW, {"a": {"q:0": (0, 0)}}, jobs=("q", "idle")))
    sample = throughput.observe(status(NOW + 6, {"a": {"q:0": (1, 4)}}, jobs=("q", "idle")))
    assert sample is not None
    assert sample.rates == {"idle": (0.0, 0.0), "q": (10.0, 40.0)}
    assert sample.totals() == (10.0, 40.0)


def test_the_ring_keeps_the_last_samples_and_ignores_a_clock_that_did_not_move() -> None:
    throughput = Throughput(size=3)
    for second in range(6):
        throughput.observe(status(NOW + second, {"a": {"q:0": (second, second)}}))
    assert throughput.observe(status(NOW + 5, {"a": {"q:0": (9, 9)}})) is None
    assert [s["t"] for s in throughput.series()] == [NOW + 3, NOW + 4, NOW + 5]
    with pytest.raises(ValueError):
        Throughput(size=0)


def hostile_status() -> dict[str, Any]:
    """A process whose identity, job and error message are HTML."""
    member = MemberState(
        identity="<img src=x onerror=alert(1)>:1:abc",
        deadline=NOW + 2.5,
        traits={
            "capacity": 4,
            "jobs": ["<b>job</b>"],
            "hostname": "<i>host</i>",
            "pid": 1,
            "started_at": NOW - 60,
        },
        info={
            "heartbeat_at": NOW - 0.5,
            "running": {"<b>job</b>": [0]},
            "slots": {
                "<b>job</b>:0": {
                    "state": "backoff",
                    "restarts": 2,
                    "last_error": "ValueError: <script>alert('pwned')</script>",
                }
            },
        },
    )
    snapshot = GroupSnapshot(
        version=1,
        members=[member],
        counts={},
        assignment={member.identity: {"<b>job</b>": [0]}},
        assignment_version=1,
        unplaced={},
        now=NOW,
    )
    return build_status(snapshot, now=NOW)


def test_text_written_by_processes_is_escaped_in_the_html() -> None:
    html = render_live(hostile_status(), None, actions=True)
    page = html["summary"] + html["tables"]
    assert "<script>" not in page and "<img" not in page and "<b>job</b>" not in page
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in page
    assert 'value="&lt;img src=x onerror=alert(1)&gt;:1:abc"' in page


def test_the_live_html_shows_processes_jobs_and_errors_and_actions_only_when_enabled() -> None:
    with_actions = render_live(hostile_status(), None, actions=True)["tables"]
    assert 'data-action="scale"' in with_actions and 'data-action="quiet"' in with_actions
    assert "Errors and restarts" in with_actions and "backoff" in with_actions
    without = render_live(hostile_status(), None, actions=False)["tables"]
    assert "data-action" not in without and "<form" not in without


def test_a_process_with_an_event_loop_shows_its_lag_and_a_lagging_one_stands_out() -> None:
    snapshot = GroupSnapshot(
        version=1,
        members=[
            MemberState(
                identity=f"h:{pid}:abc",
                deadline=NOW + 2.5,
                traits={"capacity": 4, "jobs": ["poll"], "hostname": "h", "pid": pid},
                info={
                    "heartbeat_at": NOW - 0.5,
                    "running": {"poll": [0]},
                    "event_loop": {"lag": lag, "stalls": stalls, "slots": 1, "warn_after": 0.25},
                },
            )
            for pid, lag, stalls in ((1, 0.003, 0), (2, 1.5, 4))
        ],
        counts={},
        assignment={},
        assignment_version=1,
        unplaced={},
        now=NOW,
    )
    tables = render_live(build_status(snapshot, now=NOW), None, actions=False)["tables"]
    found = re.findall(r'<div class="([^"]*)" data-test="loop-lag"[^>]*>([^<]*)</div>', tables)
    assert found == [
        ("small muted", "loop lag 3 ms"),
        ("small bad-text", "loop lag 1.5s · 4 stalls"),
    ]
