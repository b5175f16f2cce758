"""Fault scenarios against real ``process-balancer run`` processes, one line of figures each.

Three runners of one job with six slots (iterations of three 30 ms records, each record a
write to a fenced store on the test Redis). On Redis and PostgreSQL each runner reaches the
backend through a TCP proxy of its own; the Redis backend is a ``redis-server`` of the run's
own on a free port, so it can be stalled, restarted empty or re-clocked. Scenarios (see
``tests/support/chaos.py`` for what each figure means):

    kill        kill -9 of one runner
    sigstop     SIGSTOP of one runner for 7 s (lock TTL 5 s), then SIGCONT
    restart     Redis killed and restarted empty on the same port       (Redis only)
    stall       Redis SIGSTOPped for 8 s (past process_expiry)          (Redis only)
    long-stall  Redis SIGSTOPped for 40 s (past the 30 s lock TTL)      (Redis only)
    cut         one runner's link reset for 6 s, then healed            (not SQLite)
    blackhole   one runner's link blackholed for 6 s, then healed with the held bytes
                delivered late                                          (not SQLite)
    clock       the Redis server's clock steps 20 s forward             (Redis only)
    garbage     every key of the group overwritten with garbage         (Redis only)
    huge-count  a worker count of 10**15 written behind the checks      (Redis only)
    kill-loop   kill -9 of a random runner every 4 s for 20 s, a fresh one started each time

    python bench/chaos.py --backend all [--scenario all] [--json] [--seed N]

Each line: takeover (fault start until every slot ran on another process), recovery (fault
end until the group is whole and balanced again), overlapping iterations of one slot (and
how many of them were not stopped by fencing), stale claims and writes the fenced store
refused, fencing-token regressions, and runners still alive. The product's goal (DESIGN):
0 unfenced overlaps, 0 regressions, whole again within 2 s of the fault's end, every
process alive.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import redis

TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS_DIR))

from support.chaos import SCENARIOS, Figures, Setup, Timings, run  # noqa: E402
from support.servers import RedisServer  # noqa: E402

BACKENDS = ["redis", "postgresql", "sqlite"]


@contextlib.contextmanager
def backend(kind: str, scenario: str, workdir: Path, args: argparse.Namespace) -> Iterator[Setup]:
    """A fresh backend of ``kind`` and a fresh store namespace for one scenario."""
    namespace = f"pbchaos-{uuid.uuid4().hex[:10]}"
    server = None
    schema = None
    if kind == "redis":
        server = RedisServer(workdir, clock=scenario == "clock")
        url = server.url
    elif kind == "postgresql":
        schema = f"pbchaos_{uuid.uuid4().hex[:10]}"
        url = f"{args.postgres_url}?schema={schema}"
    else:
        url = f"sqlite:///{workdir / 'coordination.sqlite3'}"
    try:
        yield Setup(kind, url, namespace, args.redis_url, workdir, server)
    finally:
        if server is not None:
            server.close()
        if schema is not None:
            import psycopg

            with psycopg.connect(args.postgres_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        store = redis.Redis.from_url(args.redis_url)
        keys = list(store.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            store.delete(*keys)
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="all", choices=[*BACKENDS, "all"])
    parser.add_argument("--scenario", default="all", choices=[*SCENARIOS, "all"])
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--seed", type=int, default=1, help="seed of the kill loop's choices")
    parser.add_argument("--keep-logs", action="store_true", help="keep the runners' logs")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis for the fenced store (never faulted)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("PB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    kinds = BACKENDS if args.backend == "all" else [args.backend]
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    timings = Timings(seed=args.seed)
    root = Path(tempfile.mkdtemp(prefix="pb-chaos-"))
    if not args.json:
        print(
            f"chaos: 3 runners, 1 job x 6 slots, 3 x 30 ms records per iteration; heartbeat 1 s, "
            f"process_expiry 3 s, lock TTL {timings.lock_ttl:g} s "
            f"({timings.pause_lock_ttl:g} s in sigstop); logs in {root}"
        )
    failed = False
    for kind in kinds:
        for name in names:
            _, applies, _ = SCENARIOS[name]
            if kind not in applies:
                continue
            workdir = root / f"{kind}-{name}"
            workdir.mkdir()
            started = time.monotonic()
            try:
                with backend(kind, name, workdir, args) as setup:
                    figures = run(name, setup, timings)
            except Exception as exc:  # one broken scenario must not hide the others' figures
                failed = True
                figures = Figures(name, kind, notes=[f"error: {exc}"])
            figures.notes.append(f"{time.monotonic() - started:.0f}s")
            print(json.dumps(figures.as_dict()) if args.json else figures.line(), flush=True)
    if not args.keep_logs and not failed:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
