"""A partitioned job whose records are tenant ids: slot ``i`` of ``N`` owns the tenants
``t`` with ``t % N == i``, as a job sharding its work by ``tenant_id % worker_count`` would.
Every record is logged (tenant, slot, process, count, generation, start, end), so a test can
check that no tenant was handled by two slots at once across count changes."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import process_balancer


class TenantJob(process_balancer.Base):
    """Options: ``tenants`` (how many), ``record_time`` (seconds per tenant), ``tenant_log``
    (where each handled tenant is appended)."""

    partitioned = True

    def lock_records(self) -> list[int]:
        count, index = self.worker_count, self.worker_index
        assert count is not None and self.generation is not None
        return [t for t in range(int(self.options.get("tenants", 24))) if t % count == index]

    def process_record(self, tenant: int) -> None:
        started = time.time()
        time.sleep(float(self.options.get("record_time", 0.02)))
        entry = {
            "tenant": tenant,
            "slot": self.worker_index,
            "pid": os.getpid(),
            "count": self.worker_count,
            "generation": self.generation,
            "start": started,
            "end": time.time(),
        }
        fd = os.open(self.options["tenant_log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(entry) + "\n").encode())
        finally:
            os.close(fd)

    def unlock_records(self) -> None:
        pass


@dataclass(frozen=True)
class Handled:
    tenant: int
    slot: int
    pid: int
    count: int
    generation: int
    start: float
    end: float


def read_handled(path: Path) -> list[Handled]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [
        Handled(**json.loads(line)) for line in text.splitlines(keepends=True) if line[-1:] == "\n"
    ]


def double_handled(handled: list[Handled]) -> list[tuple[Handled, Handled]]:
    """Pairs of records of one tenant by two different slots (or processes) that overlap."""
    found = []
    by_tenant: dict[int, list[Handled]] = {}
    for record in sorted(handled, key=lambda h: h.start):
        for other in by_tenant.get(record.tenant, []):
            if (other.slot, other.pid) != (record.slot, record.pid) and other.end > record.start:
                found.append((other, record))
        by_tenant.setdefault(record.tenant, []).append(record)
    return found


def mixed_generations(handled: list[Handled]) -> list[tuple[Handled, Handled]]:
    """Pairs of records of two generations that overlap in time (any tenants)."""
    ordered = sorted(handled, key=lambda h: h.start)
    found = []
    for i, record in enumerate(ordered):
        for other in ordered[max(0, i - 400) : i]:
            if other.generation != record.generation and other.end > record.start:
                found.append((other, record))
    return found
