"""The quickstart's work: a queue of emails in a SQLite file of its own.

Worker ``i`` claims a batch of queued emails by stamping them with its index (``owner``) and
its worker lock's fencing token (``fence``). A send is recorded only while the email still
carries that stamp, so a worker that lost its slot (its process was paused or cut off) cannot
mark an email its successor now owns. Every send the simulated mail server performs is logged
in ``deliveries``, which is how the tests prove that no email went out twice.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import NamedTuple

SCHEMA = """
CREATE TABLE IF NOT EXISTS emails (
    id INTEGER PRIMARY KEY,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued',   -- queued | sent
    owner INTEGER,                           -- worker index that claimed it
    fence INTEGER,                           -- that worker's fencing token
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS emails_by_status_owner ON emails (status, owner);
CREATE TABLE IF NOT EXISTS deliveries (
    email_id INTEGER NOT NULL,
    worker INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    at REAL NOT NULL
);
"""

SUBJECTS = ("Your weekly report", "Welcome aboard", "Invoice available", "Password changed")


class Email(NamedTuple):
    id: int
    recipient: str
    subject: str


class EmailQueue:
    """One worker's connection to the queue file (WAL mode, waits for other writers)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), timeout=10, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.executescript(f"BEGIN IMMEDIATE;\n{SCHEMA}\nCOMMIT;")

    def seed_if_empty(self, count: int) -> int:
        """Queue ``count`` emails if the table has none at all; returns how many were queued.

        Runs in one write transaction, so of several processes starting at once only the
        first one seeds.
        """
        with self._write():
            if self.conn.execute("SELECT EXISTS (SELECT 1 FROM emails)").fetchone()[0]:
                return 0
            self.conn.executemany(
                "INSERT INTO emails (recipient, subject) VALUES (?, ?)",
                (
                    (f"user{n:05d}@example.com", SUBJECTS[n % len(SUBJECTS)])
                    for n in range(1, count + 1)
                ),
            )
        return count

    def claim(self, owner: int, fence: int, batch: int) -> list[Email]:
        """Up to ``batch`` emails for worker ``owner``: first those an earlier holder of the same
        index left claimed (it crashed or lost its lock), then fresh ones in id order."""
        with self._write():
            adopted = self.conn.execute(
                "UPDATE emails SET fence = ? WHERE status = 'queued' AND owner = ? AND fence < ?",
                (fence, owner, fence),
            ).rowcount
            self.conn.execute(
                "UPDATE emails SET owner = ?, fence = ? WHERE id IN ("
                "  SELECT id FROM emails WHERE status = 'queued' AND owner IS NULL"
                "  ORDER BY id LIMIT ?)",
                (owner, fence, max(0, batch - adopted)),
            )
            rows = self.conn.execute(
                "SELECT id, recipient, subject FROM emails "
                "WHERE status = 'queued' AND owner = ? AND fence = ? ORDER BY id",
                (owner, fence),
            ).fetchall()
        return [Email(*row) for row in rows]

    def mark_sent(self, email: Email, owner: int, fence: int) -> bool:
        """Log the delivery and mark the email sent, if this holder still owns it."""
        with self._write():
            now = time.time()
            self.conn.execute(
                "INSERT INTO deliveries (email_id, worker, pid, at) VALUES (?, ?, ?, ?)",
                (email.id, owner, os.getpid(), now),
            )
            marked = self.conn.execute(
                "UPDATE emails SET status = 'sent', sent_at = ?, owner = NULL, fence = NULL "
                "WHERE id = ? AND status = 'queued' AND owner = ? AND fence = ?",
                (now, email.id, owner, fence),
            ).rowcount
        return marked == 1

    def release(self, owner: int, fence: int) -> None:
        """Hand back what this holder claimed and did not send."""
        with self._write():
            self.conn.execute(
                "UPDATE emails SET owner = NULL, fence = NULL "
                "WHERE status = 'queued' AND owner = ? AND fence = ?",
                (owner, fence),
            )

    def left(self) -> int:
        """Emails not sent yet."""
        return int(
            self.conn.execute("SELECT count(*) FROM emails WHERE status = 'queued'").fetchone()[0]
        )

    def close(self) -> None:
        self.conn.close()

    def _write(self) -> _Transaction:
        return _Transaction(self.conn)


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``: the write lock is taken before anything is read."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
