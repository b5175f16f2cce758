"""Draining a PostgreSQL queue table: process-balancer beside a hand-written loop.

Fills ``queue_records`` (the queue example's table, in a schema of this run's own) with
200,000 rows, then drains it

* with process-balancer: 2 ``process-balancer run`` processes x 2 workers of the example's
  ``ProcessQueue`` job, on each coordination backend (and on PostgreSQL with the
  ``advisory_lock`` driver too), and
* with a hand-written psycopg loop, 4 threads with a connection each, running the same SQL
  (claim a batch with FOR UPDATE SKIP LOCKED, one UPDATE per row marking it done, release).

Rate = rows / (last row done - first row claimed), from the table's own timestamps, so process
start-up is not counted. After every run the table is checked: every row done, each by exactly
one write (process_count = 1), none left claimed. ``--kill`` adds runs in which one of the two
processes is SIGKILLed halfway through; the survivor takes its workers over and adopts the rows
it had claimed.

    python bench/drain.py [--rows 200000] [--backends redis,postgresql,...] [--repeat 1] [--kill]
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import psycopg
import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "queue"
sys.path.insert(0, str(EXAMPLE))

import fill  # noqa: E402 - the example's fill.py
import jobs  # noqa: E402 - the example's jobs.py: the SQL both sides run

from process_balancer.client.api import Client  # noqa: E402
from process_balancer.config.schema import settings_from  # noqa: E402

PROCESSES = 2
WORKERS_PER_PROCESS = 2
BATCH = 1000

CHECK_SQL = """
SELECT count(*),
       count(*) FILTER (WHERE status <> 'done'),
       count(*) FILTER (WHERE process_count <> 1),
       count(*) FILTER (WHERE lock_owner IS NOT NULL),
       extract(epoch FROM max(processed_at) - min(locked_at))::float8
FROM queue_records
"""

_children: list[subprocess.Popen[bytes]] = []


@atexit.register
def _kill_children() -> None:
    for child in _children:
        if child.poll() is None:
            child.kill()
            child.wait(10)


@dataclass
class Result:
    label: str
    rows: int
    seconds: float
    ok: bool
    detail: str

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def with_search_path(url: str, schema: str) -> str:
    """``url`` whose sessions find unqualified tables (queue_records) in ``schema`` first."""
    parts = urlsplit(url)
    query = f"{parts.query}&" if parts.query else ""
    query += urlencode({"options": f"-csearch_path={schema},public"})
    return urlunsplit(parts._replace(query=query))


def verify(db_url: str, rows: int) -> tuple[bool, float, str]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(CHECK_SQL).fetchone()
    assert row is not None
    total, not_done, not_once, claimed, span = row
    ok = total == rows and not_done == 0 and not_once == 0 and claimed == 0
    detail = (
        f"{total:,} rows, {not_done} not done, {not_once} not processed exactly once, "
        f"{claimed} left claimed"
    )
    return ok, float(span or 0.0), detail


def refill(db_url: str, rows: int) -> None:
    with open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        try:
            code = fill.main(["--rows", str(rows), "--reset", "--database-url", db_url])
        finally:
            sys.stdout = stdout
    if code != 0:
        raise SystemExit(f"fill.py failed with exit code {code}")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


# -- (b) the hand-written loop ------------------------------------------------------------------


def hand_written(db_url: str, rows: int, threads: int) -> Result:
    refill(db_url, rows)
    errors: list[BaseException] = []

    def drain(owner: int) -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                params = {"owner": owner, "fence": 1, "batch": BATCH}
                while True:
                    claimed = conn.execute(jobs.CLAIM_SQL, params).fetchall()
                    if not claimed:
                        return
                    for row_id, payload in sorted(claimed):
                        conn.execute(
                            jobs.DONE_SQL,
                            {
                                "id": row_id,
                                "result": jobs.checksum(payload),
                                "owner": owner,
                                "fence": 1,
                                "pid": os.getpid(),
                            },
                        )
                    conn.execute(jobs.UNLOCK_SQL, {"owner": owner, "fence": 1})
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=drain, args=(i,)) for i in range(threads)]
    started = time.monotonic()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    wall = time.monotonic() - started
    if errors:
        raise errors[0]
    ok, span, detail = verify(db_url, rows)
    return Result(
        f"hand-written loop, {threads} threads", rows, span, ok, f"{detail}; wall {wall:.2f}s"
    )


# -- (a) process-balancer -----------------------------------------------------------------------


@dataclass
class Group:
    backend: str
    namespace: str
    config: Path
    logs: list[Path]
    children: list[subprocess.Popen[bytes]]


def start_group(backend_url: str, db_url: str, job_class: str, workdir: Path) -> Group:
    namespace = f"pbbench-drain-{uuid.uuid4().hex[:8]}"
    config = workdir / f"{namespace}.yml"
    job = {
        "class": f"jobs:{job_class}",
        "workers": PROCESSES * WORKERS_PER_PROCESS,
        "batch_size": BATCH,
        "idle_sleep": 0.05,
        "database_url": db_url,
    }
    settings = {"backend": backend_url, "namespace": namespace, "max_threads": 4}
    config.write_text(yaml.safe_dump({"global": settings, "jobs": {"process_queue": job}}))
    group = Group(backend_url, namespace, config, [], [])
    jobs_py = str(EXAMPLE / "jobs.py")
    for n in range(PROCESSES):
        log = workdir / f"{namespace}-{n}.log"
        child = subprocess.Popen(
            [sys.executable, "-m", "process_balancer", "run", "-c", str(config), "-r", jobs_py],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
        )
        _children.append(child)
        group.logs.append(log)
        group.children.append(child)
    client = Client(settings_from(backend=backend_url, namespace=namespace))
    try:

        def split() -> bool:
            procs = client.status()["processes"]
            loads = sorted(sum(len(v) for v in p["running"].values()) for p in procs)
            return loads == [WORKERS_PER_PROCESS] * PROCESSES

        wait_until(split, 60, f"{PROCESSES} processes x {WORKERS_PER_PROCESS} workers")
    finally:
        client.close()
    return group


def stop_group(group: Group) -> None:
    for child in group.children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in group.children:
        child.wait(60)


# Both counts read the example's partial indexes, not the table: watching the drain must not
# take CPU from it (the hand-written loop is not watched at all).
UNCLAIMED_SQL = "SELECT count(*) FROM queue_records WHERE status = 'queued' AND lock_owner IS NULL"
PENDING_SQL = (
    "SELECT EXISTS (SELECT 1 FROM queue_records WHERE status = 'queued' AND lock_owner IS NULL)"
    " OR EXISTS (SELECT 1 FROM queue_records WHERE lock_owner IS NOT NULL)"
)


def unclaimed(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(UNCLAIMED_SQL).fetchone()
    return int(row[0]) if row else 0


def drained(db_url: str) -> bool:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(PENDING_SQL).fetchone()
    return row is not None and not row[0]


def balanced(
    label: str, backend_url: str, db_url: str, rows: int, workdir: Path, job: str, kill: bool
) -> Result:
    refill(db_url, 0)
    group = start_group(backend_url, db_url, job, workdir)
    extra = ""
    try:
        # One COPY: every row appears at once, while both processes are running.
        with (
            psycopg.connect(db_url, autocommit=True) as conn,
            conn.cursor() as cursor,
            cursor.copy(fill.COPY_SQL) as copy,
        ):
            for payload in fill.payloads(rows):
                copy.write_row((payload,))
        if kill:
            wait_until(lambda: unclaimed(db_url) <= rows // 2, 300, "half the rows", every=0.5)
            victim = group.children[1]
            victim.kill()
            killed_at = time.time()
            victim.wait(10)
        wait_until(lambda: drained(db_url), 600, "the queue to drain", every=0.5)
        if kill:
            survivor_log = group.logs[0].read_text()
            stamps = re.findall(r"^(\S+ \S+) WARNING .*took over (\d+) row", survivor_log, re.M)
            adopted = sum(int(n) for _, n in stamps)
            first = _log_time(stamps[0][0]) - killed_at if stamps else None
            shown = f"{first:.2f}s" if first is not None else "n/a"
            extra = f"; {adopted} claimed row(s) adopted, first {shown} after the kill"
    finally:
        stop_group(group)
    ok, span, detail = verify(db_url, rows)
    return Result(label, rows, span, ok, detail + extra)


def _log_time(stamp: str) -> float:
    """A log line's ``2026-01-01 10:00:00,123`` as epoch seconds."""
    whole, _, millis = stamp.partition(",")
    return time.mktime(time.strptime(whole, "%Y-%m-%d %H:%M:%S")) + int(millis or 0) / 1000


# -- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument(
        "--backends",
        default="redis,postgresql,postgresql+advisory,sqlite",
        help="comma-separated: redis, postgresql, postgresql+advisory, sqlite",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each, median reported")
    parser.add_argument("--kill", action="store_true", help="also runs with a SIGKILL halfway")
    args = parser.parse_args()

    run_id = uuid.uuid4().hex[:8]
    queue_schema, coord_schema = f"pbbench_queue_{run_id}", f"pbbench_coord_{run_id}"
    db_url = with_search_path(args.database_url, queue_schema)
    base = args.database_url
    sep = "&" if urlsplit(base).query else "?"
    pg_backend = f"{base}{sep}schema={coord_schema}"
    workdir = Path(tempfile.mkdtemp(prefix="pbbench-drain-"))
    backends = {
        "redis": (args.redis_url, "ProcessQueue"),
        "postgresql": (pg_backend, "ProcessQueue"),
        "postgresql+advisory": (pg_backend, "ProcessQueueAdvisory"),
        "sqlite": (f"sqlite:///{workdir / 'coordination.sqlite3'}", "ProcessQueue"),
    }
    chosen = [name.strip() for name in args.backends.split(",") if name.strip()]
    for name in chosen:
        if name not in backends:
            parser.error(f"unknown backend {name!r}; choose from {', '.join(backends)}")
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{queue_schema}"')
    print(
        f"Draining {args.rows:,} rows of queue_records ({BATCH} per claim, one UPDATE per row) "
        f"on {urlsplit(args.database_url).netloc}; {os.cpu_count()} CPU(s); median of "
        f"{args.repeat}"
    )
    results: dict[str, list[Result]] = {}
    try:
        for _ in range(args.repeat):
            baseline = hand_written(db_url, args.rows, PROCESSES * WORKERS_PER_PROCESS)
            results.setdefault(baseline.label, []).append(baseline)
            for name in chosen:
                url, job = backends[name]
                label = f"process-balancer, {PROCESSES}x{WORKERS_PER_PROCESS}, {name}"
                run = balanced(label, url, db_url, args.rows, workdir, job, kill=False)
                results.setdefault(label, []).append(run)
            if args.kill:
                for name in chosen:
                    url, job = backends[name]
                    label = f"... {name}, one process SIGKILLed halfway"
                    run = balanced(label, url, db_url, args.rows, workdir, job, kill=True)
                    results.setdefault(label, []).append(run)
    finally:
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{queue_schema}" CASCADE')
            conn.execute(f'DROP SCHEMA IF EXISTS "{coord_schema}" CASCADE')
        client = redis.Redis.from_url(args.redis_url)
        for key in client.scan_iter(match="pbbench-drain-*", count=1000):
            client.delete(key)
    report(results)


def report(results: dict[str, list[Result]]) -> None:
    base_label = next(iter(results))
    base = statistics.median(r.rate for r in results[base_label])
    width = max(len(label) for label in results)
    print()
    print(f"{'':<{width}}  {'rows/s':>9}  {'vs loop':>7}  check")
    failed = False
    for label, runs in results.items():
        rate = statistics.median(r.rate for r in runs)
        ok = all(r.ok for r in runs)
        failed |= not ok
        print(
            f"{label:<{width}}  {rate:>9,.0f}  {rate / base:>6.2f}x  "
            f"{'OK' if ok else 'FAILED'}: {runs[-1].detail}"
        )
    print()
    print("goal: >= 0.90x the hand-written loop with the same connections; excellent: >= 0.97x")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
