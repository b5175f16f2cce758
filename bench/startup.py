"""How fast the command starts: ``--version``, ``--help``, and ``run`` until it is ready.

Each figure is the median of several runs, printed beside ``python -c pass`` measured in the
same run (the interpreter's own start on this machine) and as a ratio to it. ``run`` until
ready is from spawning ``process-balancer run`` (SQLite backend, one job with one slot) until
its ``/readyz`` answers 200, that is until it has joined its group.

    python bench/startup.py            # --runs N
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

JOB = """
import process_balancer

class Idle(process_balancer.Base):
    def lock_records(self):
        self.status_sleep(1)
        return []

    def unlock_records(self):
        pass
"""


def timed(command: list[str], runs: int) -> float:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def until_ready(pb: str, runs: int) -> float:
    seconds = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "idle_job.py").write_text(JOB)
            port = free_port()
            (work / "pb.yml").write_text(
                f"global:\n  backend: sqlite:///{work}/pb.sqlite3\n  metrics_port: {port}\n"
                "jobs:\n  idle:\n    class: idle_job:Idle\n    workers: 1\n"
            )
            started = time.perf_counter()
            proc = subprocess.Popen(
                [pb, "run", "-c", str(work / "pb.yml")],
                cwd=work,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                while True:
                    try:
                        with urllib.request.urlopen(
                            f"http://127.0.0.1:{port}/readyz", timeout=1
                        ) as answer:
                            if answer.status == 200:
                                break
                    except OSError:
                        pass
                    if time.perf_counter() - started > 30:
                        raise SystemExit("run never became ready")
                    time.sleep(0.005)
                seconds.append(time.perf_counter() - started)
            finally:
                proc.terminate()
                proc.wait(10)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    pb = shutil.which("process-balancer")
    if pb is None:
        raise SystemExit("process-balancer is not installed: pip install -e .")
    baseline = timed([sys.executable, "-c", "pass"], args.runs)
    print(f"python -c pass                  {baseline * 1000:6.0f} ms  (baseline)")
    for label, command in (
        ("process-balancer --version", [pb, "--version"]),
        ("process-balancer --help", [pb, "--help"]),
    ):
        median = timed(command, args.runs)
        print(f"{label:<31} {median * 1000:6.0f} ms  {median / baseline:4.1f}x the baseline")
    ready = until_ready(pb, max(3, args.runs // 3))
    print(f"{'process-balancer run, ready':<31} {ready * 1000:6.0f} ms  {ready / baseline:4.1f}x")


if __name__ == "__main__":
    main()
