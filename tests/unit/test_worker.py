"""One worker in-process, on the in-memory backend: iteration order and its guarantees."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import process_balancer
from process_balancer.backends.memory import MemoryBackend
from process_balancer.locks import LockContext, SimpleRedisLock
from process_balancer.runtime.leases import LeaseKeeper
from process_balancer.runtime.wakeups import Notifier
from process_balancer.runtime.workers.base import WorkerSpec
from process_balancer.runtime.workers.thread import ThreadWorker
from support.harness import wait_until
from support.workers import IDENTITY


class Scripted(process_balancer.Base):
    """Records every call; raises where ``options['raise_in']`` says."""

    calls: list[str]

    def _call(self, name: str) -> None:
        self.options["calls"].append(name)
        if self.options.get("raise_in") == name:
            raise RuntimeError(f"raised in {name}")

    def before_perform(self) -> None:
        self._call("before_perform")

    def lock_records(self) -> list[int]:
        self._call("lock_records")
        self.options["fences"].append(self.fencing_token)
        return [1, 2]

    def process_record(self, record: Any) -> None:
        self._call(f"process_record:{record}")

    def unlock_records(self) -> None:
        self._call("unlock_records")
        self.status_abort()

    def after_perform(self) -> None:
        self._call("after_perform")


def run_worker(
    backend: MemoryBackend,
    keeper: LeaseKeeper,
    job_class: type,
    options: dict,
    acquire_timeout: float = 2.0,
) -> ThreadWorker:
    spec = WorkerSpec(
        job_id="j",
        worker_index=0,
        job_class=job_class,
        options=options,
        driver_class=SimpleRedisLock,
        lock_context=LockContext(backend, backend.namespace, "j", 0, IDENTITY, 30.0),
        acquire_timeout=acquire_timeout,
    )
    done = threading.Event()
    worker = ThreadWorker(spec, keeper=keeper, notifier=Notifier(), on_exit=lambda w: done.set())
    worker.start()
    assert done.wait(10), "worker did not finish"
    return worker


def test_iteration_runs_in_contract_order(backend, keeper) -> None:
    options: dict[str, Any] = {"calls": [], "fences": []}
    worker = run_worker(backend, keeper, Scripted, options)
    assert worker.outcome == "aborted"
    assert options["calls"] == [
        "before_perform",
        "lock_records",
        "process_record:1",
        "process_record:2",
        "unlock_records",
        "after_perform",
    ]
    assert len(options["fences"]) == 1 and options["fences"][0] > 0


@pytest.mark.parametrize("where", ["lock_records", "process_record:1"])
def test_unlock_and_after_perform_run_after_an_exception(backend, keeper, where) -> None:
    options: dict[str, Any] = {"calls": [], "fences": [], "raise_in": where}
    worker = run_worker(backend, keeper, Scripted, options)
    assert worker.outcome == "failed"
    assert worker.error == f"RuntimeError: raised in {where}"
    assert options["calls"][-2:] == ["unlock_records", "after_perform"]


def test_after_perform_runs_when_before_perform_raises(backend, keeper) -> None:
    options: dict[str, Any] = {"calls": [], "fences": [], "raise_in": "before_perform"}
    worker = run_worker(backend, keeper, Scripted, options)
    assert worker.outcome == "failed"
    assert options["calls"] == ["before_perform", "after_perform"]


def test_lock_is_released_after_the_iteration(backend, keeper, rclient, namespace) -> None:
    run_worker(backend, keeper, Scripted, {"calls": [], "fences": []})
    assert rclient.get(f"{namespace}:lock:j:0") is None


def test_iteration_is_skipped_when_the_lock_is_held_elsewhere(backend, keeper) -> None:
    backend.heartbeat("other:2:x", traits={}, info={}, expiry=30, seen_assignment_version=-1)
    assert backend.lock_acquire("j:0", "other:2:x", 30) is not None
    options: dict[str, Any] = {"calls": [], "fences": []}
    spec = WorkerSpec(
        "j",
        0,
        Scripted,
        options,
        SimpleRedisLock,
        LockContext(backend, backend.namespace, "j", 0, IDENTITY, 30.0),
        0.3,
    )
    worker = ThreadWorker(spec, keeper=keeper, notifier=Notifier(), on_exit=lambda w: None)
    worker.start()
    wait_until(lambda: worker.skipped >= 2, 5, message="two skipped iterations")
    worker.stop("test over")
    worker.join(5)
    assert "lock_records" not in options["calls"]
    assert options["calls"][:2] == ["before_perform", "after_perform"]


def test_fencing_token_grows_with_every_acquisition(backend, keeper) -> None:
    first: dict[str, Any] = {"calls": [], "fences": []}
    second: dict[str, Any] = {"calls": [], "fences": []}
    run_worker(backend, keeper, Scripted, first)
    run_worker(backend, keeper, Scripted, second)
    assert second["fences"][0] > first["fences"][0]


def test_status_sleep_rejects_negative_seconds() -> None:
    job = process_balancer.Base(job_id="j", worker_index=0)
    with pytest.raises(ValueError, match="non-negative"):
        job.status_sleep(-1)


def test_runtime_lock_timeout_comes_from_options() -> None:
    job = process_balancer.Base(job_id="j", worker_index=0, options={"runtime_lock_timeout": 7})
    assert job.runtime_lock_timeout == 7.0
    assert process_balancer.Base(job_id="j", worker_index=0).runtime_lock_timeout == 30.0


class Traced(ThreadWorker):
    """A worker kind that routes every call into the job through :meth:`call`, as an asyncio
    or subprocess kind does, and records the method names."""

    kind = "traced"

    def call(self, method: Any, *args: Any) -> Any:
        self.spec.options["traced"].append(method.__name__)
        return super().call(method, *args)


def test_a_worker_kind_gets_every_job_call_and_the_supervisor_picks_it_by_name(
    backend, keeper, monkeypatch
) -> None:
    """The iteration protocol is the base's: a kind only says where the loop runs and how a
    job method is called; the supervisor builds the kind the job's spec names."""
    from process_balancer.runtime import workers
    from process_balancer.runtime.supervisor import Supervisor

    monkeypatch.setitem(workers.KINDS, "traced", f"{__name__}:Traced")
    assert workers.worker_class("traced") is Traced
    with pytest.raises(ValueError, match="unknown worker kind 'fibers'; use one of"):
        workers.worker_class("fibers")

    options: dict[str, Any] = {"calls": [], "fences": [], "traced": []}
    spec = WorkerSpec(
        job_id="j",
        worker_index=0,
        job_class=Scripted,
        options=options,
        driver_class=SimpleRedisLock,
        lock_context=LockContext(backend, backend.namespace, "j", 0, IDENTITY, 30.0),
        acquire_timeout=2.0,
        kind="traced",
    )
    supervisor = Supervisor(
        make_spec=lambda job_id, index: spec, keeper=keeper, notifier=Notifier(), wake=lambda: None
    )
    supervisor.reconcile({("j", 0)}, why_stop="not assigned")
    wait_until(lambda: "after_perform" in options["traced"], 10, message="one iteration")
    assert options["traced"][:6] == [
        "before_perform",
        "lock_records",
        "process_record",
        "process_record",
        "unlock_records",
        "after_perform",
    ]
    supervisor.stop_all("test over")


class SlowFirstAcquire(SimpleRedisLock):
    """Takes the lock, then stalls past its ttl before answering, the first time only (a
    process frozen right after its lock was granted)."""

    stalled = False

    def try_acquire(self) -> int | None:
        fence = super().try_acquire()
        if fence is not None and not SlowFirstAcquire.stalled:
            SlowFirstAcquire.stalled = True
            time.sleep(self.context.ttl + 0.1)
        return fence


def test_a_lease_that_ran_out_before_the_iteration_began_starts_no_iteration(
    backend, keeper
) -> None:
    """A worker whose lock was granted but whose lease is over by the time it could call
    lock_records (it was frozen in between) claims nothing with that superseded token: the
    iteration is skipped as a lost lock, and the next one takes the lock afresh."""
    SlowFirstAcquire.stalled = False
    options: dict[str, Any] = {"calls": [], "fences": []}
    spec = WorkerSpec(
        job_id="j",
        worker_index=0,
        job_class=Scripted,
        options=options,
        driver_class=SlowFirstAcquire,
        lock_context=LockContext(backend, backend.namespace, "j", 0, IDENTITY, 0.3),
        acquire_timeout=5.0,
    )
    done = threading.Event()
    worker = ThreadWorker(spec, keeper=keeper, notifier=Notifier(), on_exit=lambda w: done.set())
    worker.start()
    assert done.wait(10), "worker did not finish"
    assert options["calls"][:3] == ["before_perform", "after_perform", "before_perform"]
    assert options["calls"].count("lock_records") == 1
    assert worker.lock_losses == 1 and worker.outcome == "aborted"


class AnswerLost(MemoryBackend):
    """Takes the lock, then loses the answer (the caller sees a timeout)."""

    def lock_acquire(self, *args: Any, **kwargs: Any) -> Any:
        super().lock_acquire(*args, **kwargs)
        raise process_balancer.BackendError("timed out (the answer was lost)")


def test_a_lock_taken_by_an_attempt_whose_answer_was_lost_is_given_back_on_giving_up(
    namespace: str,
) -> None:
    # The slot moves on before the next attempt: the lock must not stay with this (live)
    # process for its whole TTL, blocking the slot's new owner.
    lossy = AnswerLost(f"memory://{namespace}", namespace)
    lossy.heartbeat(IDENTITY, traits={}, info={}, expiry=30, seen_assignment_version=-1)
    lossy.heartbeat("peer", traits={}, info={}, expiry=30, seen_assignment_version=-1)
    context = LockContext(lossy, namespace, "j", 0, IDENTITY, 30.0)
    driver = SimpleRedisLock(context)
    with pytest.raises(process_balancer.BackendError):
        driver.try_acquire()
    plain = MemoryBackend(f"memory://{namespace}", namespace)
    assert plain.lock_acquire("j:0", "peer", 30.0) is None  # it was taken, for IDENTITY
    driver.close()
    taken = plain.lock_acquire("j:0", "peer", 30.0)
    assert taken is not None
    # Closing again (or after a successful attempt) releases nothing of anyone else's.
    driver.close()
    assert plain.lock_renew("j:0", taken.token, 30.0)
