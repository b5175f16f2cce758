"""One contract, three worker kinds: the same real-process tests for ``thread``, ``asyncio``
and ``process`` workers on real Redis (iteration order, unlock after an exception and its
backoff, stop, quiet, scaling, and no slot on two runners at once through joins, a quiet
runner, scaling and a kill). What is particular to each kind is in test_processes.py,
test_async_processes.py and test_process_workers.py."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

import process_balancer
from support.harness import IterationLog, running_by_pid, settled, wait_until

pytestmark = pytest.mark.backends("redis")

#: kind -> (recording job, failing job), each logging the runner's pid.
KINDS = {
    "thread": ("support.jobs:RecordingJob", "support.jobs:FailingJob"),
    "asyncio": ("support.jobs:AsyncRecordingJob", "support.jobs:AsyncFailingJob"),
    "process": ("support.jobs:ChildRecordingJob", "support.jobs:ChildFailingJob"),
}


def job(kind: str, failing: bool = False, **options: Any) -> dict[str, Any]:
    return {
        "class": KINDS[kind][failing],
        "worker": kind,
        "records": 4,
        "record_time": 0.025,
        **options,
    }


def loads(log: IterationLog, window: float = 0.6) -> list[int]:
    return sorted(len(s) for s in running_by_pid(log, time.time() - window).values())


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_iterations_keep_their_order_and_term_exits_zero(
    kind: str, group_config, spawn, iteration_log
) -> None:
    a = spawn(group_config({"q": job(kind, workers=2)}), "a")
    wait_until(lambda: len(iteration_log.events()) >= 16, 30, message="eight iterations")
    a.send(signal.SIGTERM)
    assert a.wait(20) == 0
    for slot in (0, 1):
        seen = [
            e for e in iteration_log.events() if e["slot"] == slot and e["ev"] in ("start", "end")
        ]
        assert [e["ev"] for e in seen] == ["start", "end"] * (len(seen) // 2)
        assert {e["pid"] for e in seen} == {a.pid}
        fences = [e["fence"] for e in seen[::2]]
        assert fences == sorted(set(fences)), "a fencing token did not increase"


def test_a_raising_job_runs_unlock_records_and_restarts_after_a_backoff(
    kind: str, group_config, spawn, iteration_log
) -> None:
    a = spawn(group_config({"q": job(kind, failing=True, workers=1)}), "a")
    wait_until(
        lambda: len([e for e in iteration_log.events() if e["ev"] == "end"]) >= 2,
        30,
        message="two failed iterations, each with unlock_records",
    )
    ends = [e["t"] for e in iteration_log.events() if e["ev"] == "end"]
    assert ends[1] - ends[0] >= 0.8, "restarted without its backoff"
    assert "boom from" in a.log()
    assert a.popen.poll() is None


def test_never_two_runners_on_one_slot_through_joins_quiet_scaling_and_a_kill(
    kind: str, group_config, spawn, iteration_log, backend_url: str, namespace: str
) -> None:
    client = process_balancer.configure(backend=backend_url, namespace=namespace)
    config = group_config({"q": job(kind, workers=4)})
    a = spawn(config, "a")
    wait_until(settled(iteration_log, {a.pid: 4}), 30, message="a runs 4")
    b = spawn(config, "b")
    wait_until(settled(iteration_log, {a.pid: 2, b.pid: 2}), 30, message="b joins: 2/2")

    client.adjust_scheduled_workers("q", to=6)
    wait_until(lambda: loads(iteration_log) == [3, 3], 30, message="scaled to 6: 3/3")

    a.send(signal.SIGUSR1)  # quiet
    wait_until(settled(iteration_log, {b.pid: 6}), 30, message="a quiet: b runs 6")
    assert a.popen.poll() is None

    c = spawn(config, "c")
    wait_until(settled(iteration_log, {b.pid: 3, c.pid: 3}), 30, message="c joins: 3/3")

    b.kill()
    iteration_log.dead[b.pid] = b.died_at or time.time()
    wait_until(settled(iteration_log, {c.pid: 6}), 30, message="c takes b's slots over")

    overlaps = iteration_log.overlaps()
    assert not overlaps, f"{len(overlaps)} overlapping iterations, first: {overlaps[0]}"
    for proc in (a, c):
        proc.send(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_a_runner_cut_off_mid_iteration_stops_at_a_record_and_runs_unlock_records(
    kind: str, spawn_behind_proxy, iteration_log
) -> None:
    """Given a long iteration, when the runner's link to the backend is blackholed, its
    lease runs out: the iteration stops at a record boundary before its end and
    unlock_records runs, and nothing more starts until the link heals."""
    a, link = spawn_behind_proxy({"q": job(kind, workers=1, records=400, record_time=0.025)}, "a")
    wait_until(
        lambda: any(e["ev"] == "start" for e in iteration_log.events()),
        30,
        message="a long iteration under way",
    )
    time.sleep(0.5)
    link.blackhole()
    ends = wait_until(
        lambda: [e for e in iteration_log.events() if e["ev"] == "end"],
        15,
        message="the iteration cut off, with unlock_records",
    )
    assert ends[0]["done"] < 400, "the iteration ran to its end"
    cut_at = time.time()
    time.sleep(1.0)
    assert not [e for e in iteration_log.events() if e["ev"] == "start" and e["t"] > cut_at]
    link.heal()
    wait_until(
        lambda: len([e for e in iteration_log.events() if e["ev"] == "start"]) >= 2,
        30,
        message="a runs again once healed",
    )
    assert a.popen.poll() is None


def test_every_kind_reads_the_count_and_generation_and_a_partitioned_resize_is_a_barrier(
    kind: str, group_config, spawn, iteration_log, backend_url: str, namespace: str
) -> None:
    """A partitioned job of each kind: its iterations see worker_count and generation; after
    a resize from 2 to 3 a new generation runs, and every iteration of the old one ended
    before the first of the new one started (long iterations are cut at a record)."""
    client = process_balancer.configure(backend=backend_url, namespace=namespace)
    config = group_config({"q": job(kind, workers=2, records=40, partitioned=True)})
    a = spawn(config, "a")
    b = spawn(config, "b")

    def starts(count: int) -> dict[int, list[dict[str, Any]]]:
        found: dict[int, list[dict[str, Any]]] = {}
        for e in iteration_log.events():
            if e["ev"] == "start" and e["count"] == count:
                found.setdefault(e["slot"], []).append(e)
        return found

    # Both processes run (a TERM before one has installed its handlers would kill it).
    wait_until(
        lambda: {e["pid"] for s in starts(2).values() for e in s} == {a.pid, b.pid},
        30,
        message="two slots under count 2, on both processes",
    )
    client.adjust_scheduled_workers("q", to=3)
    wait_until(lambda: len(starts(3)) == 3, 30, message="three slots under count 3")
    old = {e["gen"] for s in starts(2).values() for e in s}
    new = {e["gen"] for s in starts(3).values() for e in s}
    assert len(old) == 1 and len(new) == 1 and new.pop() > old.pop()
    first_new = min(e["t"] for s in starts(3).values() for e in s)
    old_ends = [e["t"] for e in iteration_log.events() if e["ev"] == "end" and e["count"] == 2]
    assert old_ends and max(old_ends) <= first_new
    # The old generation's iterations were cut at a record boundary, not run to their end.
    assert any(e["done"] < 40 for e in iteration_log.events() if e["ev"] == "end")
    for proc in (a, b):
        proc.send(signal.SIGTERM)
        assert proc.wait(20) == 0
