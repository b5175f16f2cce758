"""Throughput history for the dashboard: iterations and records per minute, per job.

Processes report cumulative ``iterations`` and ``records`` per slot in their heartbeat info.
Those counters belong to one worker instance, so they start again at 0 when a worker restarts
or a slot moves to another process. A rate is therefore built from per-slot deltas between
two samples: a counter that went down, or a slot not seen in the previous sample, counts from
0. The web process keeps a small ring of samples in memory; nothing is written anywhere.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..backends import BackendError

__all__ = ["Sample", "Sampler", "Throughput"]

logger = logging.getLogger(__name__)

#: (process identity, job id, worker index)
SlotKey = tuple[str, str, int]


@dataclass(frozen=True)
class Sample:
    """Rates over the interval that ended at ``at`` (backend clock)."""

    at: float
    #: job id -> (iterations per minute, records per minute)
    rates: dict[str, tuple[float, float]]

    def totals(self) -> tuple[float, float]:
        iterations = sum(rate[0] for rate in self.rates.values())
        records = sum(rate[1] for rate in self.rates.values())
        return round(iterations, 1), round(records, 1)


def slot_counters(status: Mapping[str, Any]) -> dict[SlotKey, tuple[int, int]]:
    """Per-slot (iterations, records) of every process in a status document."""
    counters: dict[SlotKey, tuple[int, int]] = {}
    for proc in status["processes"]:
        for slot in proc["slots"]:
            iterations, records = slot["iterations"], slot["records"]
            if iterations is not None and records is not None:
                counters[(proc["identity"], slot["job"], slot["index"])] = (iterations, records)
    return counters


class Throughput:
    """A ring of the last ``size`` samples, fed with status documents."""

    def __init__(self, size: int = 360) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self._samples: deque[Sample] = deque(maxlen=size)
        self._previous: tuple[float, dict[SlotKey, tuple[int, int]]] | None = None
        self._lock = threading.Lock()

    def observe(self, status: Mapping[str, Any]) -> Sample | None:
        """Add the rates since the previous document; None for the first one (or when the
        backend's clock has not moved on)."""
        now = float(status["generated_at"])
        counters = slot_counters(status)
        with self._lock:
            previous, self._previous = self._previous, (now, counters)
            if previous is None or now <= previous[0]:
                return None
            elapsed = now - previous[0]
            done: dict[str, list[int]] = {job_id: [0, 0] for job_id in status["jobs"]}
            for key, (iterations, records) in counters.items():
                old = previous[1].get(key)
                if old is not None and iterations >= old[0] and records >= old[1]:
                    iterations, records = iterations - old[0], records - old[1]
                totals = done.setdefault(key[1], [0, 0])
                totals[0] += iterations
                totals[1] += records
            per_minute = 60.0 / elapsed
            sample = Sample(
                at=now,
                rates={
                    job_id: (round(it * per_minute, 1), round(rec * per_minute, 1))
                    for job_id, (it, rec) in sorted(done.items())
                },
            )
            self._samples.append(sample)
            return sample

    def latest(self) -> Sample | None:
        with self._lock:
            return self._samples[-1] if self._samples else None

    def series(self) -> list[dict[str, Any]]:
        """The samples, oldest first, as JSON-ready dicts: ``{"t": at, "jobs": {job: [i, r]}}``."""
        with self._lock:
            samples = list(self._samples)
        return [
            {"t": s.at, "jobs": {job_id: list(rate) for job_id, rate in s.rates.items()}}
            for s in samples
        ]


class Sampler:
    """Feeds a :class:`Throughput` from ``read()`` every ``interval`` seconds, in a daemon
    thread started on first use (a mounted app gets no lifespan events of its own)."""

    def __init__(
        self, read: Callable[[], Mapping[str, Any]], throughput: Throughput, interval: float
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.read = read
        self.throughput = throughput
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._loop, name="pb-web-sampler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._start_lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _loop(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self.throughput.observe(self.read())
                if failing:
                    logger.info("throughput sampling works again")
                failing = False
            except BackendError as exc:
                if not failing:
                    logger.warning("throughput sampling failed (%s); retrying", exc)
                failing = True
            except Exception:
                logger.exception("throughput sampling failed; retrying")
            self._stop.wait(self.interval)
