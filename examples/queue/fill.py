"""Create the example's queue table if needed and fill it with queued rows.

python examples/queue/fill.py --rows 20000 [--reset] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
SCHEMA = Path(__file__).resolve().with_name("schema.sql")
COPY_SQL = "COPY queue_records (payload) FROM STDIN"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000, help="rows to insert (default 20000)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
        help="PostgreSQL URL (default: $DATABASE_URL, else %(default)s)",
    )
    parser.add_argument(
        "--reset", action="store_true", help="empty the table (and restart ids) before filling"
    )
    args = parser.parse_args(argv)
    if args.rows < 0:
        parser.error(f"--rows must be 0 or more, got {args.rows}")
    return args


def payloads(count: int) -> Iterator[str]:
    """Order-like JSON documents, the kind of thing a queue row carries."""
    rng = random.Random()
    return (
        json.dumps(
            {
                "order": rng.randrange(10**9),
                "customer": rng.randrange(1, 50_000),
                "amount_cents": rng.randrange(100, 500_000),
                "currency": rng.choice(("EUR", "USD", "GBP")),
                "items": rng.randrange(1, 12),
            },
            separators=(",", ":"),
        )
        for _ in range(count)
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        conn = psycopg.connect(args.database_url, autocommit=True)
    except psycopg.OperationalError as exc:
        print(f"fill.py: cannot connect to {args.database_url}: {exc}", file=sys.stderr)
        return 1
    with conn:
        existed = conn.execute("SELECT to_regclass('queue_records') IS NOT NULL").fetchone()
        conn.execute(SCHEMA.read_text())
        print("table queue_records " + ("exists" if existed and existed[0] else "created"))
        if args.reset:
            conn.execute("TRUNCATE queue_records RESTART IDENTITY")
            print("table emptied")
        started = time.perf_counter()
        # One COPY is one statement, so the rows appear all at once or not at all.
        with conn.cursor() as cursor, cursor.copy(COPY_SQL) as copy:
            for payload in payloads(args.rows):
                copy.write_row((payload,))
        elapsed = time.perf_counter() - started
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'queued'), count(*) FROM queue_records"
        ).fetchone()
        queued, total = row if row else (0, 0)
    rate = f" in {elapsed:.2f}s ({args.rows / elapsed:,.0f} rows/s)" if args.rows else ""
    print(f"inserted {args.rows:,} rows{rate}; the table holds {total:,} rows, {queued:,} queued")
    return 0


if __name__ == "__main__":
    sys.exit(main())
