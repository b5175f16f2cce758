"""Partitioned jobs with real ``process-balancer run`` processes on every backend: a job
whose slot ``i`` of ``N`` owns the tenants ``t % N == i`` is resized 3 -> 5 -> 2 -> 6 while
processes join and are killed; no tenant is ever handled by two slots at once, the records of two
counts never overlap, and every tenant is handled under every count."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support.cli import pb
from support.harness import IterationLog, Process, wait_until
from support.tenant_jobs import double_handled, mixed_generations, read_handled

pytestmark = pytest.mark.backends("redis", "sqlite", "postgresql")

TENANTS = 30
SETTINGS = {"heartbeat_interval": 0.5, "process_expiry": 2.0}


def covered(log: Path, count: int, since: float) -> Callable[[], bool]:
    """Every tenant was handled under ``count`` after ``since``."""

    def check() -> bool:
        seen = {h.tenant for h in read_handled(log) if h.count == count and h.start >= since}
        return seen == set(range(TENANTS))

    return check


def test_a_partitioned_job_never_handles_a_tenant_twice_across_resizes_joins_and_kills(
    group_config: Callable[..., Path],
    spawn: Callable[..., Process],
    iteration_log: IterationLog,
    tmp_path: Path,
) -> None:
    log = tmp_path / "tenants.jsonl"
    job = {
        "class": "support.tenant_jobs:TenantJob",
        "workers": 3,
        "tenants": TENANTS,
        "record_time": 0.01,
        "tenant_log": str(log),
        "runtime_lock_timeout": 4,
        "takeover_grace": 0.5,
    }
    config = group_config({"t": job}, **SETTINGS)
    procs = [spawn(config, f"p{i}") for i in range(3)]
    start = time.time()
    wait_until(covered(log, 3, start), 30, message="every tenant handled by 3 slots")

    def resize(count: int) -> float:
        result = pb("scale", "t", str(count), "-c", str(config))
        assert result.returncode == 0, result.stderr
        return time.time()

    at = resize(5)
    procs.append(spawn(config, "p3"))  # joins while the count changes
    wait_until(covered(log, 5, at), 30, message="every tenant handled by 5 slots")

    at = resize(2)
    procs[1].kill()  # dies holding slots of the old count (or the new)
    wait_until(covered(log, 2, at), 30, message="every tenant handled by 2 slots")

    at = resize(6)
    procs.append(spawn(config, "p4"))
    procs[2].kill()
    wait_until(covered(log, 6, at), 40, message="every tenant handled by 6 slots")
    time.sleep(0.5)

    handled = read_handled(log)
    assert double_handled(handled) == []
    assert mixed_generations(handled) == []
    # Each slot handled only its own share under the count it was granted.
    assert all(h.tenant % h.count == h.slot for h in handled)
    # One generation per count, increasing with each change, in the order they were made.
    order = []
    for h in sorted(handled, key=lambda h: h.start):
        if not order or order[-1] != (h.count, h.generation):
            order.append((h.count, h.generation))
    assert [count for count, _ in order] == [3, 5, 2, 6]
    generations = [generation for _, generation in order]
    assert generations == sorted(set(generations))
    for proc in procs:
        assert "Traceback" not in proc.log(), proc.log()[-2000:]
