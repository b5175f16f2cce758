"""Taking a slot's worker lock before an iteration, as a plan (see ``plan.py``) every worker
kind carries out its own way: attempts with jittered backoff until ``acquire_timeout``, woken
early by the lock's release, never without a live membership, and for a partitioned job
under the generation the slot runs by (a :class:`~...backends.base.Gate`)."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from ...backends.base import Gate
from ..leases import Lease
from .plan import Plan

logger = logging.getLogger(__name__)

#: First and largest pause between two attempts to take a busy worker lock. A release
#: notification ends the pause early; a dead holder's lock sends none (it becomes free
#: takeover_grace after the holder's deadline), so the largest pause is what a takeover can
#: overshoot by: kept short, at the cost of a few more attempts during that wait.
ACQUIRE_RETRY_MIN = 0.02
ACQUIRE_RETRY_MAX = 0.2


def acquire_plan(worker: Any) -> Plan[Lease | None]:
    """Take the worker lock, retrying with jittered backoff until ``acquire_timeout``;
    None when the iteration is to be skipped (busy, or the worker is stopping).

    A partitioned job's lock is taken under the generation the worker knows now (read
    afresh before each attempt: a new one wakes the worker), and the iteration runs by the
    count and generation it was granted under (``worker.granted``). ``worker`` is the
    :class:`~.base.Worker` (untyped here: that module imports this one).
    """
    spec = worker.spec
    driver = spec.driver_class(spec.lock_context)
    hint = driver.wait_hint()
    if hint is not None and spec.partitioned:
        hint = f"released {spec.job_id}:*"  # its own lock's release, or any other's
    deadline = worker.kernel.monotonic() + spec.acquire_timeout
    delay = ACQUIRE_RETRY_MIN
    if hint is not None:
        worker._notifier.subscribe(hint, worker._wake)
    held = False
    result: Lease | None = None
    try:
        while not worker._halt:
            worker._wake.clear()
            partition = worker.partition
            if not worker._keeper.membership_valid() or (spec.partitioned and partition is None):
                # Without a live membership a lock taken now would be invalid at once; a
                # partitioned slot waits for its job's generation from the assignment.
                yield delay
                delay = min(delay * 2, ACQUIRE_RETRY_MAX)
                continue
            if spec.partitioned:
                assert partition is not None
                driver.gate = Gate(spec.job_id, partition.generation)
            epoch = worker._keeper.epoch
            attempt_at = worker.kernel.monotonic()
            fence = yield partial(worker._attempt, driver)
            if fence is not None:
                # Cleared before _halt is read, so a stop in between is never lost.
                worker._cut = False
                if worker._halt:
                    worker._cut = True
                worker.granted = partition
                lease = worker._keeper.hold(
                    driver, fence, attempt_at, worker._lease_lost, epoch=epoch
                )
                worker._lease = lease
                if lease.lost:  # cut before it was this worker's current lease
                    worker._cut = True
                # Read after the lease is set, as set_partition reads the lease after the
                # partition: a newer generation that came meanwhile cuts it either way.
                if spec.partitioned and worker.partition != partition:
                    worker._cut = True
                held = True
                if worker._halt:
                    worker._lease = None
                    worker._keeper.drop(lease)
                    yield partial(worker._release, lease)
                else:
                    result = lease
                break
            remaining = deadline - worker.kernel.monotonic()
            if remaining <= 0:
                logger.info(
                    "job %s worker %d: worker lock still held elsewhere%s after %.1fs; "
                    "skipping this iteration",
                    spec.job_id,
                    spec.worker_index,
                    " (or the job's previous generation still runs)" if spec.partitioned else "",
                    spec.acquire_timeout,
                )
                break
            yield min(remaining, delay * worker.kernel.uniform(0.5, 1.5))
            delay = min(delay * 2, ACQUIRE_RETRY_MAX)
    except BaseException:
        if not held:
            driver.close()
        raise
    finally:
        if hint is not None:
            worker._notifier.unsubscribe(hint, worker._wake)
    if not held:
        yield driver.close
    return result
