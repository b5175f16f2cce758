"""What a resize costs a partitioned job: the pause from a count change to every slot of the
new count running, with ``partitioned: true`` (a barrier: every slot of the old count stops
before any of the new count starts) beside the same job with ``partitioned: false``.

Three real ``process-balancer run`` processes on the local Redis run one job whose slot ``i``
of ``N`` handles the tenants ``t % N == i`` (``bench/partitioned_job.py``), each record
``--record-time`` seconds. The count goes 4 -> 6 -> 3 -> 5, set through the client API (as
``process-balancer scale`` does); each change is timed from the call to the first record of
the last slot of the new count (``pause``). For the partitioned job the gap between the last
record of the old count and the first of the new is printed too (``gap``), and any overlap of
records of two counts is counted (it must be 0).

    python bench/resize.py [--repeat 3] [--record-time 0.05] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
import yaml

from process_balancer.client.api import Client
from process_balancer.config.schema import load_config

BENCH_DIR = Path(__file__).resolve().parent
REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
COUNTS = (6, 3, 5)
TENANTS = 60


def read(log: Path) -> list[list[float]]:
    if not log.exists():
        return []
    lines = log.read_text().splitlines(keepends=True)
    return [json.loads(line) for line in lines if line.endswith("\n")]


def wait_for(check: object, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise SystemExit(f"timed out after {timeout:g}s")


def run_once(
    partitioned: bool, record_time: float, workdir: Path, redis_url: str
) -> list[dict[str, float]]:
    namespace = f"pbbench-resize-{uuid.uuid4().hex[:8]}"
    log = workdir / f"{namespace}.jsonl"
    config = workdir / f"{namespace}.yml"
    job = {
        "class": "partitioned_job:TenantJob",
        "workers": 4,
        "partitioned": partitioned,
        "tenants": TENANTS,
        "record_time": record_time,
        "tenant_log": str(log),
    }
    config.write_text(
        yaml.safe_dump(
            {"global": {"backend": redis_url, "namespace": namespace}, "jobs": {"t": job}}
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), *sys.path])}
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "process_balancer", "run", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        for _ in range(3)
    ]
    client = Client(load_config(config))
    results = []
    try:
        wait_for(lambda: {r[1] for r in read(log) if r[2] == 4} == set(range(4)), 30)
        for count in COUNTS:
            before = len(read(log))
            at = time.time()
            client.adjust_scheduled_workers("t", to=count)

            def firsts(
                count: int = count, before: int = before, at: float = at
            ) -> dict[int, float]:
                found: dict[int, float] = {}
                for _tenant, slot, n, _gen, start, _end in read(log)[before:]:
                    if n == count and start >= at:
                        found.setdefault(int(slot), start)
                return found

            wait_for(lambda count=count: len(firsts()) == count, 30)  # type: ignore[misc]
            time.sleep(4 * record_time)
            records = read(log)[before:]
            new = [r for r in records if r[2] == count]
            old = [r for r in records if r[2] != count]
            first_new = min(r[4] for r in new)
            last_old = max((r[5] for r in old), default=at)
            overlap = sum(1 for o in old for n in new if o[5] > n[4] and n[5] > o[4])
            results.append(
                {
                    "pause": max(firsts().values()) - at,
                    "gap": first_new - last_old,
                    "overlap": overlap,
                }
            )
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        client.backend.close()
        keys = redis.Redis.from_url(redis_url)
        stale = list(keys.scan_iter(match=f"{namespace}:*"))
        if stale:
            keys.delete(*stale)
        keys.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--record-time", type=float, default=0.05)
    parser.add_argument("--redis-url", default=REDIS)
    args = parser.parse_args()
    found: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for partitioned in (False, True):  # side by side, alternating
                found[partitioned] += run_once(
                    partitioned, args.record_time, Path(tmp), args.redis_url
                )
    print(
        f"3 processes, count 4 -> {' -> '.join(map(str, COUNTS))}, {TENANTS} tenants, "
        f"{args.record_time * 1000:g} ms per record, {args.repeat} run(s) per mode"
    )
    medians = {}
    for partitioned, rows in found.items():
        pauses = [r["pause"] for r in rows]
        medians[partitioned] = statistics.median(pauses)
        name = "partitioned: true " if partitioned else "partitioned: false"
        line = (
            f"{name}  pause median {statistics.median(pauses) * 1000:6.0f} ms, "
            f"max {max(pauses) * 1000:6.0f} ms"
        )
        if partitioned:
            gaps = [r["gap"] for r in rows]
            line += (
                f"; gap old->new median {statistics.median(gaps) * 1000:5.0f} ms; overlapping "
                f"records of two counts: {int(sum(r['overlap'] for r in rows))}"
            )
        print(line)
    print(f"barrier / no barrier (median pause): {medians[True] / medians[False]:.2f}x")


if __name__ == "__main__":
    main()
