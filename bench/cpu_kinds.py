"""Records/s of a CPU-bound job with 4 slots as threads and as child processes (``worker:
process``), one ``process-balancer run`` per kind on the same Redis, one after the other;
then the cost of an empty record in the process kind beside a bare Python loop.

    PYTHONPATH=src python bench/cpu_kinds.py [--seconds 8] [--work 20000]
"""

from __future__ import annotations

import argparse
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


class CpuJob(process_balancer.Base):
    """Every record is ``work`` iterations of a pure-Python loop; each iteration appends its
    record count to ``count_file``."""

    def lock_records(self) -> range:
        self._done = 0
        return range(int(self.options.get("records", 50)))

    def process_record(self, record: int) -> None:
        total = 0
        for i in range(int(self.options["work"])):
            total += i * i
        self._done += 1

    def unlock_records(self) -> None:
        fd = os.open(self.options["count_file"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{self._done}\n".encode())
        finally:
            os.close(fd)


def run(kind: str, job: dict[str, object], seconds: float, workdir: Path) -> float:
    """Records/s of ``job`` as ``kind`` between the first and last iteration seen."""
    counts = workdir / f"{kind}-{uuid.uuid4().hex}.txt"
    config = workdir / f"{kind}.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {
                    "backend": "redis://127.0.0.1:6379/0",
                    "namespace": f"bench-{uuid.uuid4().hex}",
                },
                "jobs": {
                    "cpu": {
                        **job,
                        "class": "cpu_kinds:CpuJob",
                        "worker": kind,
                        "count_file": str(counts),
                    }
                },
            }
        )
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
        ),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "process_balancer", "run", "-c", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not counts.exists():  # children started, first iteration done
            time.sleep(0.05)
        start_lines = len(counts.read_text().splitlines())
        began = time.monotonic()
        time.sleep(seconds)
        lines = counts.read_text().splitlines()
        elapsed = time.monotonic() - began
        return sum(int(n) for n in lines[start_lines:]) / elapsed
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def bare_loop(n: int) -> float:
    """Seconds per record of a bare loop calling an empty method."""
    job = CpuJob(job_id="bare", worker_index=0, options={"work": 0})
    job._done = 0
    began = time.perf_counter()
    for record in range(n):
        job.process_record(record)
    return (time.perf_counter() - began) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--work", type=int, default=20000, help="loop steps per record")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cpu = {"workers": 4, "records": 20, "work": args.work}
        threads = run("thread", cpu, args.seconds, workdir)
        processes = run("process", cpu, args.seconds, workdir)
        print(f"CPU-bound job, 4 slots, {args.work} loop steps per record, {os.cpu_count()} cores")
        print(f"  threads:   {threads:10,.0f} records/s")
        print(f"  processes: {processes:10,.0f} records/s   ({processes / threads:.2f}x threads)")
        empty = {"workers": 1, "records": 100000, "work": 0}
        per_second = run("process", empty, args.seconds, workdir)
        bare = bare_loop(1_000_000)
        print("empty record, 1 slot, 100,000 records per iteration")
        print(f"  process kind: {1e6 / per_second:8.3f} us/record ({per_second:,.0f} records/s)")
        print(f"  bare loop:    {bare * 1e6:8.3f} us/record ({1 / bare:,.0f} records/s)")
        print(f"  ratio: {1 / bare / per_second:.2f}x")


if __name__ == "__main__":
    main()
