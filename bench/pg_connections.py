"""PostgreSQL connections per process, heartbeat latency and worker-lock throughput: the
shared call connection (the default) beside the former pool of 4 connections, in one run.

Settings compared (each is a few module constants, set in this process and in the children):

* ``shared``: the default. Calls take turns on one connection, heartbeats and lock renewals
  first, each call cancelled by the server after ``CALL_TIMEOUT`` (statement_timeout 1 s).
* ``pool4``: the former setting. Up to 4 call connections, served in arrival order,
  statement_timeout 10 s.

Three measurements per setting:

1. **processes**: ``--processes`` real ``process-balancer run`` processes (one job, 2 workers
   per process, iterations of 1 record x 5 ms with the backend's own lock, so lock calls are
   as frequent as they get) run for ``--seconds``; pg_stat_activity is sampled every 0.1 s and
   each connection is put down to its process by its ``application_name``
   (``process_balancer[PID] ...``). Prints the most connections any one process held.
2. **calls**: in this process, ``--threads`` threads take and release worker locks in a loop
   (the work a process's workers put on the connection) while a heartbeat is sent every 0.1 s:
   lock take+release pairs per second and heartbeat round-trip p50 / p99 / max.
3. **stalled call**: another session holds a lock row (``SELECT ... FOR UPDATE`` in an open
   transaction) and one thread asks for that lock, so its call waits until its
   statement_timeout; meanwhile heartbeats go out every 0.1 s: the slowest heartbeat shows how
   long one stalled call holds the others up.

    python bench/pg_connections.py [--processes 4] [--seconds 6] [--threads 8]

Needs a PostgreSQL server (``--database-url``, default ``PB_BENCH_POSTGRES_URL`` or
``postgresql://postgres@127.0.0.1:5432/test``); works in a schema of its own, dropped at the
end. Child processes are killed when the script exits, also on an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import yaml

import process_balancer
from process_balancer.backends.postgres import backend as pg_backend
from process_balancer.backends.postgres import connections as pg_connections
from process_balancer.backends.postgres import parse_url

BENCH_DIR = Path(__file__).resolve().parent

SETTINGS: dict[str, dict[str, Any]] = {
    "shared": {
        "POOL_SIZE": pg_backend.POOL_SIZE,
        "URGENT_CALLS": sorted(pg_backend.URGENT_CALLS),
        "BACKEND_SERVER_SETTINGS": dict(pg_connections.BACKEND_SERVER_SETTINGS),
    },
    "pool4": {
        "POOL_SIZE": 4,
        "URGENT_CALLS": [],
        "BACKEND_SERVER_SETTINGS": {"statement_timeout": "10s"},
    },
}

#: Runs ``process-balancer run`` after applying a setting given in PB_BENCH_SETTING (JSON).
CHILD = """
import json, os, sys
from process_balancer.backends.postgres import backend, connections
s = json.loads(os.environ["PB_BENCH_SETTING"])
backend.POOL_SIZE = s["POOL_SIZE"]
backend.URGENT_CALLS = frozenset(s["URGENT_CALLS"])
connections.BACKEND_SERVER_SETTINGS = s["BACKEND_SERVER_SETTINGS"]
from process_balancer.cli import main
sys.argv = ["process-balancer", "run", "-c", sys.argv[1]]
main()
"""

TRAITS = {"capacity": 4, "active": True, "jobs": ["j"], "defaults": {"j": 1}, "started_at": 1.0}

_children: list[subprocess.Popen[bytes]] = []


@atexit.register
def _kill_children() -> None:
    for child in _children:
        if child.poll() is None:
            child.kill()
            child.wait(10)


class TinyJob(process_balancer.Base):
    """One record of 5 ms per iteration: a worker lock taken and released every ~5 ms."""

    def lock_records(self) -> list[int]:
        return [0]

    def process_record(self, record: int) -> None:
        time.sleep(0.005)

    def unlock_records(self) -> None:
        pass


def apply(setting: dict[str, Any]) -> None:
    pg_backend.POOL_SIZE = setting["POOL_SIZE"]
    pg_backend.URGENT_CALLS = frozenset(setting["URGENT_CALLS"])
    pg_connections.BACKEND_SERVER_SETTINGS = setting["BACKEND_SERVER_SETTINGS"]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def connections_by_pid(db: psycopg.Connection[Any], pids: set[int]) -> dict[int, int]:
    rows = db.execute(
        "SELECT substring(application_name FROM '^process_balancer\\[([0-9]+)\\]')::int, "
        "count(*) FROM pg_stat_activity WHERE application_name LIKE 'process\\_balancer[%%' "
        "GROUP BY 1"
    ).fetchall()
    return {pid: count for pid, count in rows if pid in pids}


# -- 1. real processes ----------------------------------------------------------------------------


def processes(
    setting: dict[str, Any], url: str, db: psycopg.Connection[Any], args: Any
) -> dict[str, float]:
    namespace = f"pbbench-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="pbbench-"))
    config = workdir / "process_balancer.yml"
    job = {"class": "pg_connections:TinyJob", "workers": 2 * args.processes}
    document = {"global": {"backend": url, "namespace": namespace}, "jobs": {"tiny": job}}
    config.write_text(yaml.safe_dump(document))
    env = {
        **os.environ,
        "PB_BENCH_SETTING": json.dumps(setting),
        "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), os.environ.get("PYTHONPATH", "")]),
    }
    started = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(config)],
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(workdir / f"p{i}.log").open("wb"),
        )
        for i in range(args.processes)
    ]
    _children.extend(started)
    pids = {p.pid for p in started}
    try:
        wait_until(lambda: len(connections_by_pid(db, pids)) == len(pids), 60, "every process")
        time.sleep(2.0)  # joined and running its slots
        most: dict[int, int] = {}
        totals = []
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            counts = connections_by_pid(db, pids)
            totals.append(sum(counts.values()))
            for pid, count in counts.items():
                most[pid] = max(most.get(pid, 0), count)
            time.sleep(0.1)
    finally:
        for child in started:
            child.kill()
            child.wait(10)
    target = parse_url(url)
    db.execute(f"DELETE FROM {target.quoted_schema}.pb_members WHERE namespace = %s", (namespace,))
    return {
        "max per process": max(most.values()),
        "max total": max(totals),
        "mean per process": statistics.mean(totals) / len(pids),
    }


# -- 2. and 3. calls in this process ---------------------------------------------------------------


def beat_loop(backend: Any, stop: threading.Event, latencies: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        backend.heartbeat("bench", traits=TRAITS, info={}, expiry=3.0, seen_assignment_version=-1)
        latencies.append(time.perf_counter() - started)
        stop.wait(0.1)


def calls(setting: dict[str, Any], url: str, args: Any) -> dict[str, float]:
    apply(setting)
    backend = pg_backend.PostgresBackend(url, f"pbbench-{uuid.uuid4().hex[:8]}")
    stop = threading.Event()
    pairs = [0] * args.threads
    latencies: list[float] = []

    def take_and_release(i: int) -> None:
        while not stop.is_set():
            held = backend.lock_acquire(f"j:{i}", "bench", 30)
            if held is not None:
                backend.lock_release(f"j:{i}", held.token)
                pairs[i] += 1

    threads = [threading.Thread(target=take_and_release, args=(i,)) for i in range(args.threads)]
    threads.append(threading.Thread(target=beat_loop, args=(backend, stop, latencies)))
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(args.seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    backend.close()
    ordered = sorted(latencies)
    return {
        "lock pairs/s": sum(pairs) / elapsed,
        "heartbeat p50 ms": 1000 * ordered[len(ordered) // 2],
        "heartbeat p99 ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "heartbeat max ms": 1000 * ordered[-1],
    }


def stalled(setting: dict[str, Any], url: str, args: Any) -> dict[str, float]:
    apply(setting)
    namespace = f"pbbench-{uuid.uuid4().hex[:8]}"
    backend = pg_backend.PostgresBackend(url, namespace)
    target = parse_url(url)
    backend.lock_acquire("j:0", "bench", 0.001)  # creates the row
    stop = threading.Event()
    latencies: list[float] = []
    outcome: list[str] = []

    def stuck_call() -> None:
        started = time.perf_counter()
        try:
            backend.lock_acquire("j:0", "bench", 30)
            outcome.append("returned")
        except Exception as exc:
            outcome.append(type(exc).__name__)
        outcome.append(f"{time.perf_counter() - started:.2f}s")

    with psycopg.connect(target.conninfo) as holder:
        holder.execute(
            f"SELECT 1 FROM {target.quoted_schema}.pb_locks WHERE namespace = %s FOR UPDATE",
            (namespace,),
        )
        beater = threading.Thread(target=beat_loop, args=(backend, stop, latencies))
        beater.start()
        time.sleep(0.3)
        before = len(latencies)
        caller = threading.Thread(target=stuck_call)
        caller.start()
        time.sleep(1.5)
        holder.rollback()
    caller.join()
    time.sleep(0.3)
    stop.set()
    beater.join()
    backend.close()
    during = latencies[before:]
    return {"heartbeat max ms while a call is stalled": 1000 * max(during)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "PB_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    schema = f"pbbench_{uuid.uuid4().hex[:8]}"
    url = f"{args.database_url}?schema={schema}"
    db = psycopg.connect(args.database_url, autocommit=True)
    try:
        (max_connections,) = db.execute("SHOW max_connections").fetchone() or ("?",)
        apply(SETTINGS["shared"])
        pg_backend.PostgresBackend(url, "pbbench-setup").close()  # creates the tables
        print(f"PostgreSQL max_connections = {max_connections}")
        results: dict[str, dict[str, float]] = {name: {} for name in SETTINGS}
        for name, setting in SETTINGS.items():
            results[name].update(processes(setting, url, db, args))
            results[name].update(calls(setting, url, args))
            results[name].update(stalled(setting, url, args))
        print(f"\n{'':42} {'shared (default)':>17} {'pool4 (former)':>15} {'ratio':>7}")
        for key in results["shared"]:
            new, old = results["shared"][key], results["pool4"][key]
            print(f"{key:42} {new:17.2f} {old:15.2f} {new / old:6.2f}x")
        print(
            f"\n{args.processes} processes x 2 slots of 5 ms iterations for processes; "
            f"{args.threads} lock threads + 1 heartbeat every 0.1 s for {args.seconds:g}s."
        )
    finally:
        db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        db.close()


if __name__ == "__main__":
    main()
