"""Watch the example's queue drain, then check that every row was processed exactly once.

    python examples/queue/progress.py [--database-url URL] [--once]

Prints a line a second until no row is queued or claimed (or Ctrl-C), then checks the table:
every row done, each by exactly one write, none left claimed. Exits 0 when that holds, 1 when
it does not, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import psycopg

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"

COUNTS_SQL = """
SELECT count(*) FILTER (WHERE status = 'queued' AND lock_owner IS NULL),
       count(*) FILTER (WHERE status = 'queued' AND lock_owner IS NOT NULL),
       count(*) FILTER (WHERE status = 'done')
FROM queue_records
"""

CHECK_SQL = """
SELECT count(*),
       count(*) FILTER (WHERE status <> 'done'),
       count(*) FILTER (WHERE lock_owner IS NOT NULL),
       count(*) FILTER (WHERE status = 'done' AND process_count <> 1),
       extract(epoch FROM max(processed_at) - min(processed_at))
FROM queue_records
"""

PER_PROCESS_SQL = """
SELECT processed_pid, count(*) FROM queue_records WHERE status = 'done' GROUP BY 1 ORDER BY 1
"""


@dataclass(frozen=True)
class Counts:
    queued: int
    claimed: int
    done: int

    @property
    def drained(self) -> bool:
        return self.queued == 0 and self.claimed == 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
        help="PostgreSQL URL (default: $DATABASE_URL, else %(default)s)",
    )
    parser.add_argument("--once", action="store_true", help="print one line and exit")
    return parser.parse_args(argv)


def counts(conn: psycopg.Connection[Any]) -> Counts:
    row = conn.execute(COUNTS_SQL).fetchone()
    assert row is not None
    return Counts(*row)


def line(current: Counts, rate: float | None) -> str:
    speed = "" if rate is None else f"  {rate:8,.0f} rows/s"
    return (
        f"{time.strftime('%H:%M:%S')}  queued {current.queued:>9,}  "
        f"claimed {current.claimed:>7,}  done {current.done:>9,}{speed}"
    )


def watch(conn: psycopg.Connection[Any], once: bool) -> None:
    """Print a line a second until nothing is queued or claimed."""
    previous: tuple[float, int] | None = None
    next_tick = time.monotonic()
    while True:
        current = counts(conn)
        now = time.monotonic()
        rate = None if previous is None else (current.done - previous[1]) / (now - previous[0])
        print(line(current, rate), flush=True)
        if once or current.drained:
            return
        previous = (now, current.done)
        next_tick += 1.0
        time.sleep(max(0.0, next_tick - time.monotonic()))


def check(conn: psycopg.Connection[Any]) -> bool:
    """Print whether every row was processed exactly once and nothing is left claimed."""
    row = conn.execute(CHECK_SQL).fetchone()
    assert row is not None
    total, not_done, claimed, not_once, span = row
    problems = [
        f"{count:,} {what}"
        for count, what in (
            (not_done, "rows not done"),
            (claimed, "rows still claimed"),
            (not_once, "done rows written more than once"),
        )
        if count
    ]
    if problems:
        print(f"NOT verified ({total:,} rows): " + ", ".join(problems))
    else:
        print(f"verified: all {total:,} rows done, each processed exactly once, none left claimed")
    per_process = conn.execute(PER_PROCESS_SQL).fetchall()
    if per_process:
        print("  rows per runner process: " + ", ".join(f"pid {p}: {n:,}" for p, n in per_process))
    if span:
        done = total - not_done
        print(
            f"  {done:,} rows in {span:.1f}s from first to last ({done / float(span):,.0f} rows/s)"
        )
    return not problems


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        conn = psycopg.connect(args.database_url, autocommit=True)
    except psycopg.OperationalError as exc:
        print(f"progress.py: cannot connect to {args.database_url}: {exc}", file=sys.stderr)
        return 1
    with conn:
        try:
            watch(conn, args.once)
        except psycopg.errors.UndefinedTable:
            print("progress.py: no table queue_records; run fill.py first", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted")
            check(conn)
            return 130
        except psycopg.OperationalError as exc:
            print(f"progress.py: lost the database connection: {exc}", file=sys.stderr)
            return 1
        if args.once:
            return 0
        return 0 if check(conn) else 1


if __name__ == "__main__":
    sys.exit(main())
