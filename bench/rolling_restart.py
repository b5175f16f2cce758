"""What a rolling restart costs, without stable identities and with them (``--stable-identity``).

Four real ``process-balancer run`` processes on the local Redis run one job of 12 slots whose
records take ``--record-time`` seconds each (0.02 s) and are logged one line each. Then each
process in turn gets ``TERM``; once it has exited its replacement starts at once, and the next
one is restarted when the group is whole again (every slot running, 3 on each process).

Two figures, from the record log, for each mode:

- slot moves: a slot's runner changed from one logical process to another. A logical process
  is a position 1..4 in the rolling order: with stable identities the restarted run of name
  ``pN`` is the same logical process as ``pN``; without, its replacement takes its position.
  Counted over each slot's records from the last one before the first ``TERM``.
- idle slot-seconds: summed over the slots, the time between the first ``TERM`` and the end
  (the group whole again after the last restart) when no process ran a record of the slot.
  The same figure over the 2 s of steady running before the first ``TERM``, scaled to the
  restart's length, is printed as the floor (the short gaps between iterations).

    python bench/rolling_restart.py [--record-time 0.02] [--redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

import process_balancer

BENCH_DIR = Path(__file__).resolve().parent
PROCESSES = 4
SLOTS = 12


class RecordJob(process_balancer.Base):
    """Five records an iteration, each ``record_time`` seconds, one log line per record."""

    def lock_records(self) -> list[int]:
        return list(range(5))

    def process_record(self, record: int) -> None:
        start = time.time()
        time.sleep(float(self.options["record_time"]))
        line = json.dumps([self.worker_index, os.getpid(), start, time.time()]) + "\n"
        fd = os.open(self.options["record_log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def unlock_records(self) -> None:
        pass


def read(log: Path) -> list[tuple[int, int, float, float]]:
    if not log.exists():
        return []
    lines = log.read_text().splitlines(keepends=True)
    return [tuple(json.loads(line)) for line in lines if line.endswith("\n")]  # type: ignore[misc]


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out after {timeout:g}s waiting for {what}")


def whole(log: Path, pids: set[int], window: float = 0.5) -> bool:
    """Every slot ran a record in the last ``window`` seconds, 3 on each current process."""
    since = time.time() - window
    by_pid: dict[int, set[int]] = {}
    for slot, pid, start, _end in read(log):
        if start >= since:
            by_pid.setdefault(pid, set()).add(slot)
    return set(by_pid) == pids and all(len(s) == SLOTS // PROCESSES for s in by_pid.values())


def idle(records: list[tuple[int, int, float, float]], begin: float, end: float) -> float:
    """Slot-seconds in [begin, end] in which no record of the slot ran."""
    total = 0.0
    for slot in range(SLOTS):
        spans = sorted((max(s, begin), min(e, end)) for sl, _p, s, e in records if sl == slot)
        covered, reach = 0.0, begin
        for start, stop in spans:
            if stop <= reach:
                continue
            covered += stop - max(start, reach)
            reach = stop
        total += (end - begin) - covered
    return total


def moves(records: list[tuple[int, int, float, float]], position: dict[int, int], t0: float) -> int:
    count = 0
    for slot in range(SLOTS):
        ordered = sorted((s, position[p]) for sl, p, s, _e in records if sl == slot)
        before = [pos for s, pos in ordered if s < t0][-1:]
        sequence = before + [pos for s, pos in ordered if s >= t0]
        count += sum(1 for a, b in itertools.pairwise(sequence) if a != b)
    return count


def run_mode(stable: bool, record_time: float, redis_url: str, workdir: Path) -> dict[str, float]:
    namespace = f"pbbench-rolling-{uuid.uuid4().hex[:8]}"
    log = workdir / f"{namespace}.jsonl"
    config = workdir / f"{namespace}.yml"
    job = {
        "class": "rolling_restart:RecordJob",
        "workers": SLOTS,
        "record_time": record_time,
        "record_log": str(log),
    }
    settings = {"backend": redis_url, "namespace": namespace}
    config.write_text(yaml.safe_dump({"global": settings, "jobs": {"q": job}}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), *sys.path])}

    def start(position: int) -> subprocess.Popen[bytes]:
        extra = ["--stable-identity", f"p{position}"] if stable else []
        return subprocess.Popen(
            [sys.executable, "-m", "process_balancer", "run", "-c", str(config), *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )

    children = {position: start(position) for position in range(1, PROCESSES + 1)}
    position = {child.pid: pos for pos, child in children.items()}
    try:
        wait_for(lambda: whole(log, set(position)), 60, "the group to start")
        time.sleep(2.0)
        t0 = time.time()
        for pos in range(1, PROCESSES + 1):
            children[pos].send_signal(signal.SIGTERM)
            children[pos].wait(60)
            children[pos] = start(pos)
            position[children[pos].pid] = pos
            live = {child.pid for child in children.values()}
            wait_for(lambda live=live: whole(log, live), 60, f"the group after restart {pos}")  # type: ignore[misc]
        end = time.time()
    finally:
        for child in children.values():
            child.send_signal(signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        _delete_keys(redis_url, namespace)
    records = read(log)
    return {
        "moves": moves(records, position, t0),
        "idle": idle(records, t0, end),
        # The steady gaps between iterations, over the 2 s before the first TERM, scaled.
        "floor": idle(records, t0 - 2.0, t0) * (end - t0) / 2.0,
        "seconds": end - t0,
    }


def _delete_keys(redis_url: str, namespace: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record-time", type=float, default=0.02)
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plain = run_mode(False, args.record_time, args.redis_url, Path(tmp))
        stable = run_mode(True, args.record_time, args.redis_url, Path(tmp))
    print(
        f"rolling restart of {PROCESSES} processes, 1 job of {SLOTS} slots, "
        f"{args.record_time * 1000:g} ms per record (defaults: heartbeat_interval 1 s, "
        "process_expiry 3 s)"
    )
    print(f"{'':34}{'without':>10}{'stable_identity':>17}{'ratio':>9}")
    rows = [
        ("slot moves", "moves", "{:10.0f}", "{:17.0f}"),
        ("idle slot-seconds", "idle", "{:10.2f}", "{:17.2f}"),
        ("  floor (steady gaps, same length)", "floor", "{:10.2f}", "{:17.2f}"),
        ("restart duration (s)", "seconds", "{:10.2f}", "{:17.2f}"),
    ]
    for label, key, left, right in rows:
        ratio = stable[key] / plain[key] if plain[key] else float("nan")
        print(f"{label:34}{left.format(plain[key])}{right.format(stable[key])}{ratio:8.2f}x")


if __name__ == "__main__":
    main()
