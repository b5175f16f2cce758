"""Framework cost of an empty record of an asyncio job, beside a bare async loop.

One asyncio worker (``AsyncWorker`` on the process's shared event loop) runs an
``AsyncBase`` job whose ``lock_records`` returns 100,000 trivial records and whose
``async def process_record`` does nothing, with the real ``simple_redis`` worker lock, lease
keeper and Redis backend, all in this process (the rig of ``record_cost.py``). Measured in
the same run, on the same records:

* a bare async loop ``for r in records: await job.process_record(r)`` in a coroutine on an
  event loop (the floor for a coroutine per record);
* for reference, the thread kind and a bare synchronous loop, as ``record_cost.py`` measures
  them.

Every figure is the median of ``--repeat`` measurements, the kinds interleaved.

    python bench/record_cost_async.py [--records 100000] [--iterations 20] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import redis
from record_cost import (
    Measurement,
    WorkerRig,
    delete_namespace,
    fmt_rate,
    measure_bare_loop,
    measure_worker,
)

import process_balancer
from process_balancer.runtime.workers.asyncio_worker import AsyncWorker
from process_balancer.runtime.workers.shared import SharedResources


class EmptyAsyncJob(process_balancer.AsyncBase):
    """The async twin of record_cost's EmptyJob: ``status_abort()`` after ``iterations``."""

    async def lock_records(self) -> Iterable[int]:
        return range(int(self.options["records"]))

    async def process_record(self, record: Any) -> None:
        pass

    async def unlock_records(self) -> None:
        self._done = getattr(self, "_done", 0) + 1
        if self._done >= int(self.options["iterations"]):
            self.status_abort()


def measure_async_worker(
    rig: WorkerRig, shared: SharedResources, records: int, iterations: int
) -> Measurement:
    rig.heartbeat()
    finished = threading.Event()
    spec = rig.spec({"records": records, "iterations": iterations})
    spec = type(spec)(**{**spec.__dict__, "job_class": EmptyAsyncJob})
    worker = AsyncWorker(
        spec,
        keeper=rig.keeper,
        notifier=rig.notifier,
        on_exit=lambda _worker: finished.set(),
        shared=shared,
    )
    started = time.perf_counter()
    worker.start()
    if not finished.wait(timeout=600):
        worker.stop("benchmark timed out")
        raise SystemExit("the worker did not finish within 600 s")
    elapsed = time.perf_counter() - started
    if worker.outcome != "aborted" or worker.records != records * iterations:
        raise SystemExit(
            f"the async worker ended {worker.outcome!r} after {worker.records} records "
            f"({worker.error}, skipped {worker.skipped}, lock losses {worker.lock_losses})"
        )
    return Measurement(worker.records, elapsed)


def measure_bare_async_loop(records: int, iterations: int) -> Measurement:
    job = EmptyAsyncJob(job_id="empty", worker_index=0, options={"records": records})

    async def loop() -> float:
        started = time.perf_counter()
        for _ in range(iterations):
            for r in await job.lock_records():
                await job.process_record(r)
        return time.perf_counter() - started

    return Measurement(records * iterations, asyncio.run(loop()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--records", type=int, default=100_000, help="records per iteration")
    parser.add_argument("--iterations", type=int, default=20, help="iterations per measurement")
    parser.add_argument("--repeat", type=int, default=5, help="measurements of each kind")
    args = parser.parse_args()

    namespace = f"pbbench-record-cost-async-{uuid.uuid4().hex[:10]}"
    client = redis.Redis.from_url(args.redis_url)
    rig = WorkerRig(args.redis_url, namespace)
    shared = SharedResources()
    n, k = args.records, args.iterations
    kinds: list[tuple[str, Callable[[], Measurement]]] = [
        ("bare_async", lambda: measure_bare_async_loop(n, k)),
        ("async", lambda: measure_async_worker(rig, shared, n, k)),
        ("bare", lambda: measure_bare_loop(n, k)),
        ("thread", lambda: measure_worker(rig, n, k)),
    ]
    runs: dict[str, list[Measurement]] = {kind: [] for kind, _ in kinds}
    try:
        # Unmeasured runs warm up the scripts, the connection, the loop and the threads.
        measure_async_worker(rig, shared, n, 1)
        measure_worker(rig, n, 1)
        for i in range(args.repeat):
            for kind, run in kinds if i % 2 == 0 else list(reversed(kinds)):
                runs[kind].append(run())
        if rig.lost:
            raise SystemExit(f"{len(rig.lost)} worker lock(s) were lost during the benchmark")
    finally:
        shared.close()
        rig.close()
        deleted = delete_namespace(client, namespace)
        client.close()

    rate = {kind: statistics.median(m.rate for m in runs[kind]) for kind in runs}
    print("Framework cost of an empty record of an asyncio job (one worker)")
    print(f"  {k} iterations of {n:,} records per measurement, median of {args.repeat}")
    print()
    rows = [
        ("process-balancer asyncio kind (AsyncWorker, simple_redis lock)", "async"),
        ("bare async loop (await process_record per record)", "bare_async"),
        ("process-balancer thread kind (ThreadWorker), for reference", "thread"),
        ("bare Python loop, for reference", "bare"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"  {'':<{width}}  {'records/s':>14}  {'ns/record':>11}  all runs (records/s)")
    for name, kind in rows:
        spread = ", ".join(fmt_rate(m.rate) for m in runs[kind])
        ns = 1e9 / rate[kind]
        print(f"  {name:<{width}}  {fmt_rate(rate[kind]):>14}  {ns:>11,.1f}  {spread}")
    print()
    vs_bare_async = rate["bare_async"] / rate["async"]
    print(f"  asyncio kind / bare async loop:   {vs_bare_async:.2f}x slower")
    print(f"  asyncio kind / thread kind:       {rate['thread'] / rate['async']:.2f}x slower")
    verdict = "met" if vs_bare_async <= 2 else "NOT met"
    print(f"  DESIGN's 'within 2x of a bare loop', against the bare async loop: {verdict}")
    print()
    print(f"  namespace {namespace}: {deleted} key(s) deleted")


if __name__ == "__main__":
    main()
