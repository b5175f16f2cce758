"""Worker counts set at runtime, and pause/resume, in the SQLite backend.

A stored count that is not an integer was written by something else: it is reported where it
is read and kept as it is, never overwritten by a guess.
"""

from __future__ import annotations

import logging
import sqlite3

from .base import CorruptStateError
from .sqlite_connection import Scope

logger = logging.getLogger(__name__)


def stored_count(raw: object) -> int | None:
    """A stored worker count as an integer, or None when it is not one."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw)
        except ValueError:
            return None
    return None


class CountTable:
    """Rows of ``pb_counts`` (runtime counts) and ``pb_paused`` (counts to resume to)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def _stored(self, conn: sqlite3.Connection, table: str, job_id: str) -> object | None:
        row = conn.execute(
            f"SELECT count FROM {table} WHERE namespace = ? AND job_id = ?",
            (self.scope.namespace, job_id),
        ).fetchone()
        return None if row is None else row[0]

    def _store(self, conn: sqlite3.Connection, table: str, job_id: str, count: int) -> None:
        conn.execute(
            f"INSERT INTO {table} (namespace, job_id, count) VALUES (?, ?, ?) "
            "ON CONFLICT (namespace, job_id) DO UPDATE SET count = excluded.count",
            (self.scope.namespace, job_id, count),
        )

    def _forget(self, conn: sqlite3.Connection, table: str, job_id: str) -> None:
        conn.execute(
            f"DELETE FROM {table} WHERE namespace = ? AND job_id = ?",
            (self.scope.namespace, job_id),
        )

    def get(self, job_id: str) -> int | None:
        with self.scope.db.transaction(write=False) as conn:
            raw = self._stored(conn, "pb_counts", job_id)
        if raw is None:
            return None
        count = stored_count(raw)
        if count is None:
            raise CorruptStateError(
                f"the worker count of job {job_id!r} stored in "
                f"{self.scope.where('pb_counts', 'count')} is {raw!r}, not an integer; set it "
                f"again with adjust_scheduled_workers({job_id!r}, to=N)"
            )
        return count

    def set(self, job_id: str, *, to: int | None, by: int | None, default: int) -> int:
        with self.scope.db.transaction() as conn:
            raw = self._stored(conn, "pb_counts", job_id)
            current = default if raw is None else stored_count(raw)
            if to is not None:
                new = to
            elif current is None:
                raise CorruptStateError(
                    f"the worker count of job {job_id!r} stored in "
                    f"{self.scope.where('pb_counts', 'count')} is {raw!r}, not an integer, so it "
                    f"cannot be changed by {by}; set it with to=N instead"
                )
            else:
                new = current + (by or 0)
            if new < 0:
                raise ValueError(
                    f"cannot change the worker count of job {job_id!r} by {by}: it is "
                    f"{current}, and a count cannot go below 0; nothing was changed"
                )
            self._store(conn, "pb_counts", job_id, new)
            # A count set while the job is paused ends the pause: the latest word wins.
            self._forget(conn, "pb_paused", job_id)
            self.scope.bump(conn)
        return new

    def clear(self, job_id: str) -> None:
        with self.scope.db.transaction() as conn:
            self._forget(conn, "pb_counts", job_id)
            self._forget(conn, "pb_paused", job_id)
            self.scope.bump(conn)

    def pause(self, job_id: str, *, default: int) -> int | None:
        with self.scope.db.transaction() as conn:
            if self._stored(conn, "pb_paused", job_id) is not None:
                return None
            raw = self._stored(conn, "pb_counts", job_id)
            current = default if raw is None else stored_count(raw)
            if current is None or current < 0:
                raise CorruptStateError(
                    f"the worker count of job {job_id!r} stored in "
                    f"{self.scope.where('pb_counts', 'count')} is {raw!r}, not a count, so it "
                    "cannot be remembered; set it with process-balancer scale first"
                )
            self._store(conn, "pb_paused", job_id, current)
            self._store(conn, "pb_counts", job_id, 0)
            self.scope.bump(conn)
        return current

    def resume(self, job_id: str) -> int | None:
        with self.scope.db.transaction() as conn:
            raw = self._stored(conn, "pb_paused", job_id)
            if raw is None:
                return None
            count = stored_count(raw)
            if count is None or count < 0:
                raise CorruptStateError(
                    f"the count to resume job {job_id!r} with, stored in "
                    f"{self.scope.where('pb_paused', 'count')}, is {raw!r}, not a count; set the "
                    "count with process-balancer scale instead"
                )
            self._store(conn, "pb_counts", job_id, count)
            self._forget(conn, "pb_paused", job_id)
            self.scope.bump(conn)
        return count

    def paused(self) -> dict[str, int]:
        with self.scope.db.transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT job_id, count FROM pb_paused WHERE namespace = ?", (self.scope.namespace,)
            ).fetchall()
        counts: dict[str, int] = {}
        for job_id, raw in rows:
            count = stored_count(raw)
            if count is None:
                logger.error(
                    "the count to resume job %r with, stored in %s, is %r, not a count; "
                    "resume refuses it until the count is set with process-balancer scale",
                    job_id,
                    self.scope.where("pb_paused", "count"),
                    raw,
                )
                continue
            counts[str(job_id)] = count
        return counts
