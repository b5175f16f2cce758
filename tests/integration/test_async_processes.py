"""AsyncBase jobs under real ``process-balancer run`` processes against real Redis: the
iteration protocol, cancellation by a stop or a lost lock, signals, scaling, exclusive
records while processes come and go, the event loop's lag when a job blocks it, and
iteration contexts named in the config, for both worker kinds."""

from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import process_balancer
from support.cli import free_port, status_json
from support.harness import IterationLog, Process, running_by_pid, settled, wait_until
from support.record_log import overlaps, read_records, token_regressions

pytestmark = pytest.mark.backends("redis")

JOB = {"class": "support.jobs:AsyncRecordingJob", "records": 4, "record_time": 0.025}


@pytest.fixture
def client(backend_url: str, namespace: str):
    return process_balancer.configure(backend=backend_url, namespace=namespace)


def loads(log: IterationLog, window: float = 0.6) -> list[int]:
    return sorted(len(s) for s in running_by_pid(log, time.time() - window).values())


def events(log: IterationLog, kind: str, pid: int | None = None) -> list[dict[str, Any]]:
    return [e for e in log.events() if e["ev"] == kind and (pid is None or e["pid"] == pid)]


def test_a_subprocess_runs_this_checkout(spawn, group_config, iteration_log) -> None:
    """The runner under test imports the package these tests were collected with."""
    a = spawn(group_config({"q": {**JOB, "workers": 1}}), "a")
    wait_until(lambda: events(iteration_log, "end"), 15, message="an iteration")
    assert "started the event loop of the asyncio workers" in a.log()


def test_each_iteration_runs_in_contract_order(group_config, spawn, iteration_log) -> None:
    config = group_config({"q": {**JOB, "workers": 2, "log_hooks": True}})
    a = spawn(config, "a")
    wait_until(lambda: len(events(iteration_log, "after")) >= 6, 15, message="six iterations")
    a.send(signal.SIGTERM)
    assert a.wait(20) == 0
    for slot in (0, 1):
        # The stop cancels the last iteration's running record (a "cancel" event), or comes
        # while the next iteration waits for its lock: that one then takes no lock and runs
        # only before_perform and after_perform.
        kinds = [e["ev"] for e in iteration_log.events() if e["slot"] == slot]
        assert kinds.count("cancel") <= 1 and kinds[-3:] in (
            ["cancel", "end", "after"],
            ["start", "end", "after"],
            ["after", "before", "after"],
        ), kinds
        kinds = [k for k in kinds if k != "cancel"]
        if kinds[-3:] == ["after", "before", "after"]:
            kinds = kinds[:-2]
        assert len(kinds) >= 12 and kinds == ["before", "start", "end", "after"] * (len(kinds) // 4)
        done = [i.done for i in iteration_log.intervals() if i.slot == slot]
        assert all(d == 4 for d in done[:-1]), done


def test_unlock_and_after_perform_run_after_an_exception_and_the_worker_backs_off(
    group_config, spawn, iteration_log
) -> None:
    config = group_config({"bad": {"class": "support.jobs:AsyncFailingJob", "workers": 1}})
    a = spawn(config, "a")
    wait_until(
        lambda: len(events(iteration_log, "end")) >= 2 and len(events(iteration_log, "after")) >= 2,
        20,
        message="two failed iterations",
    )
    assert a.popen.poll() is None
    assert "RuntimeError: boom from AsyncFailingJob" in a.log()
    ends = [e["t"] for e in events(iteration_log, "end")]
    assert ends[1] - ends[0] >= 0.8, "restarted without its backoff"


def test_a_lost_lock_cancels_the_running_record_and_unlock_records_runs(
    group_config, spawn, iteration_log, rclient, namespace
) -> None:
    config = group_config(
        {"q": {**JOB, "workers": 1, "records": 3, "record_time": 30, "runtime_lock_timeout": 1.5}}
    )
    a = spawn(config, "a")
    wait_until(lambda: events(iteration_log, "start"), 15, message="a running")
    time.sleep(0.2)
    rclient.delete(f"{namespace}:lock:q:0")
    deleted_at = time.time()
    first = wait_until(
        lambda: [i for i in iteration_log.intervals() if i.closed], 10, message="the end"
    )[0]
    assert first.done == 0, "the 30 s record was cut short"
    assert first.end - deleted_at < 2.0
    (cancel,) = [e for e in events(iteration_log, "cancel") if e["it"] == first.it]
    assert cancel["record"] == 0
    # Logged once the iteration has ended, after unlock_records wrote its "end" event.
    wait_until(lambda: "lost its worker lock" in a.log(), 5, message="the loss in the log")
    # The next iteration takes the lock afresh with a higher token.
    wait_until(lambda: len(events(iteration_log, "start")) >= 2, 10, message="a new iteration")
    starts = events(iteration_log, "start")
    assert starts[1]["fence"] > starts[0]["fence"]


def test_term_cancels_running_records_unlocks_and_exits_zero(
    group_config, spawn, iteration_log
) -> None:
    config = group_config(
        {"q": {**JOB, "workers": 3, "records": 2, "record_time": 30}}, shutdown_timeout=20
    )
    a = spawn(config, "a")
    wait_until(lambda: len(events(iteration_log, "start")) == 3, 15, message="3 slots running")
    time.sleep(0.2)
    sent = time.monotonic()
    a.send(signal.SIGTERM)
    assert a.wait(15) == 0
    assert time.monotonic() - sent < 5, "the 30 s records were not cancelled"
    intervals = iteration_log.intervals()
    assert len(intervals) == 3 and all(i.closed and i.done == 0 for i in intervals)
    assert len(events(iteration_log, "cancel")) == 3
    assert "left the group" in a.log()


def test_ttin_dumps_every_asyncio_task_with_its_await_chain(
    group_config, spawn, iteration_log
) -> None:
    config = group_config({"q": {**JOB, "workers": 1, "records": 2, "record_time": 30}})
    a = spawn(config, "a")
    wait_until(lambda: events(iteration_log, "start"), 15, message="a running")
    a.send(signal.SIGTTIN)
    wait_until(
        lambda: "asyncio tasks:" in a.log() and "Task pb-q-0-records:" in a.log(),
        5,
        message="a dump naming the slot's records task",
    )
    dump = a.log().split("asyncio tasks:", 1)[1]
    assert "Task pb-q-0:" in dump and "in process_record" in dump


def test_quiet_hands_every_async_slot_to_a_peer(group_config, spawn, iteration_log) -> None:
    config = group_config({"q": {**JOB, "workers": 4}})
    a = spawn(config, "a")
    b = spawn(config, "b")
    wait_until(settled(iteration_log, {a.pid: 2, b.pid: 2}), 15, message="2/2")
    a.send(signal.SIGUSR1)
    wait_until(settled(iteration_log, {b.pid: 4}), 10, message="b runs all 4")
    assert a.popen.poll() is None, "a quiet process keeps running"
    assert not iteration_log.overlaps()


def test_no_record_runs_twice_at_once_as_processes_join_leave_and_scale(
    group_config, spawn, iteration_log, client, tmp_path: Path
) -> None:
    """Given async slots whose every record is logged (also a cancelled one), when processes
    join, go quiet, stop, die and the count changes, then every slot keeps running and no
    record of a slot overlaps another process's record of it."""
    record_log = tmp_path / "records.jsonl"
    config = group_config({"q": {**JOB, "workers": 6, "record_log": str(record_log)}})
    a = spawn(config, "a")
    wait_until(settled(iteration_log, {a.pid: 6}), 15, message="a runs 6")
    b = spawn(config, "b")
    wait_until(settled(iteration_log, {a.pid: 3, b.pid: 3}), 15, message="b joins: 3/3")
    client.adjust_scheduled_workers("q", to=9)
    wait_until(lambda: loads(iteration_log) == [4, 5], 15, message="scaled to 9: 4/5")
    c = spawn(config, "c")
    wait_until(settled(iteration_log, {a.pid: 3, b.pid: 3, c.pid: 3}), 15, message="3/3/3")
    a.send(signal.SIGUSR1)
    wait_until(
        lambda: (
            loads(iteration_log) == [4, 5]
            and a.pid not in running_by_pid(iteration_log, time.time() - 0.6)
        ),
        15,
        message="a quiet: b and c run 9",
    )
    b.send(signal.SIGTERM)
    assert b.wait(20) == 0
    wait_until(settled(iteration_log, {c.pid: 9}), 15, message="c runs all 9")
    client.adjust_scheduled_workers("q", by=-6)
    d = spawn(config, "d")
    wait_until(lambda: loads(iteration_log) == [1, 2], 15, message="3 over c and d")
    c.kill()
    iteration_log.dead[c.pid] = c.died_at or time.time()
    wait_until(settled(iteration_log, {d.pid: 3}), 15, message="d takes over after kill")

    records = read_records(record_log)
    assert len(records) > 500
    found = overlaps(records)
    assert not found, f"{len(found)} overlapping records, first: {found[0]}"
    assert not token_regressions(records)
    assert not iteration_log.overlaps()
    for proc in (a, d):
        proc.send(signal.SIGTERM)
        assert proc.wait(20) == 0


def scrape(port: int) -> dict[str, float]:
    """Sample name -> value of the unlabelled samples on ``/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if not sample.labels
    }


def process_of(status: dict[str, Any], proc: Process) -> dict[str, Any]:
    return next(p for p in status["processes"] if p["pid"] == proc.pid)


def test_a_blocking_job_shows_as_event_loop_lag_in_status_metrics_and_the_log(
    group_config, spawn, iteration_log, backend_url, namespace
) -> None:
    """Given a process whose async job calls time.sleep(0.5) in every record and another
    whose job awaits, then the first reports a lag of about 0.5 s, names the slot in its log
    and its metrics, and the second reports a lag near zero."""
    port = free_port()
    blocking = group_config(
        {"q": {"class": "support.jobs:AsyncBlockingJob", "workers": 1, "records": 2}},
        name="blocking.yml",
        metrics_port=port,
    )
    calm = group_config({"ok": {**JOB, "workers": 1}}, name="calm.yml")
    a = spawn(blocking, "a")
    b = spawn(calm, "b")
    group = ("--backend", backend_url, "--namespace", namespace)

    def lagging() -> dict[str, Any] | None:
        status = status_json(*group)
        loops = {p["pid"]: p["event_loop"] for p in status["processes"]}
        if not loops.get(a.pid) or not loops.get(b.pid) or not loops[a.pid]["stalls"]:
            return None
        return status

    status = wait_until(lagging, 20, 0.3, message="both processes report their loops")
    slow, fast = process_of(status, a)["event_loop"], process_of(status, b)["event_loop"]
    assert 0.4 <= slow["lag"] < 2.0 and slow["lagging"]
    assert slow["last_stall"]["slot"] == "job q worker 0"
    assert "jobs.py" in slow["last_stall"]["where"]
    assert fast["lag"] < 0.1 and fast["stalls"] == 0 and not fast["lagging"]
    log = a.log()
    assert "event loop has been blocked for" in log or "event loop was blocked for" in log
    assert "by job q worker 0 (at " in log and "in process_record" in log
    samples = scrape(port)
    assert samples["process_balancer_event_loop_lag_seconds"] >= 0.4
    assert samples["process_balancer_event_loop_stalls_total"] >= 1
    assert samples["process_balancer_event_loop_slots"] == 1


def test_iteration_contexts_named_in_the_config_wrap_every_iteration_of_both_kinds(
    group_config, spawn, iteration_log
) -> None:
    """Given a thread job and an async job whose config names a context factory (an async
    one for the async job), then every iteration is wrapped: entered with the iteration's
    fencing token before lock_records, exited after unlock_records, the last one (cut by
    the stop) included."""
    config = group_config(
        {
            "t": {
                "class": "support.jobs:RecordingJob",
                "workers": 1,
                "records": 2,
                "record_time": 0.02,
                "iteration_context": ["support.jobs:logged_context"],
            },
            "a": {
                **JOB,
                "workers": 1,
                "records": 2,
                "iteration_context": ["support.jobs:logged_async_context"],
            },
        }
    )
    proc = spawn(config, "p")
    wait_until(lambda: len(events(iteration_log, "end")) >= 10, 15, message="ten iterations")
    proc.send(signal.SIGTERM)
    assert proc.wait(20) == 0
    for job in ("t", "a"):
        seen = [e for e in iteration_log.events() if e["job"] == job and e["ev"] != "cancel"]
        kinds = [e["ev"] for e in seen]
        assert len(kinds) >= 8 and kinds == ["ctx-enter", "start", "end", "ctx-exit"] * (
            len(kinds) // 4
        ), kinds
        for enter, start in zip(seen[0::4], seen[1::4], strict=True):
            assert enter["seen"] == start["fence"] is not None
        exits = [e["error"] for e in seen[3::4]]
        # A stop cancels the async job's running record: its context sees the cancellation.
        assert exits[:-1] == [None] * (len(exits) - 1)
        assert exits[-1] in ((None, "CancelledError") if job == "a" else (None,))
