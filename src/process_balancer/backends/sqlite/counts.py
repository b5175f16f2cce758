"""Worker counts set at runtime, and pause/resume, in the SQLite backend.

A stored count that is not an integer was written by something else: it is reported where it
is read and kept as it is, never overwritten by a guess.
"""

from __future__ import annotations

import logging
import sqlite3

from ..base import CorruptStateError
from ..counts import (
    ABOVE_CEILING,
    BAD_DEFAULT,
    CORRUPT,
    HARD_LIMIT,
    NOT_A_COUNT,
    argument,
    ceiling,
    outcome,
    parse,
)
from .connection import Scope

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

    def set(self, job_id: str, *, to: object, by: object, default: object, maximum: object) -> int:
        """Set or change the count (see Backend.set_count). The values given are checked as
        the Redis scripts and the SQL functions check them: as the strings they would be sent
        as, with ``maximum`` clamped to the hard limit."""
        limit = ceiling(argument(maximum))

        def refused(status: int, value: object) -> int:
            count = outcome("set", job_id, status, value, limit, to=to, by=by, where=where)
            assert count is not None
            return count

        where = self.scope.where("pb_counts", "count")
        with self.scope.db.transaction() as conn:
            if to is not None:
                new = parse(argument(to), 0, limit)
                if new is None:
                    return refused(NOT_A_COUNT, to)
            else:
                change = parse(argument(by), -HARD_LIMIT, HARD_LIMIT)
                if change is None:
                    return refused(NOT_A_COUNT, by)
                raw = self._stored(conn, "pb_counts", job_id)
                if raw is None:
                    current = parse(argument(default), 0, limit)
                    if current is None:
                        return refused(BAD_DEFAULT, default)
                else:
                    current = parse(raw, 0, HARD_LIMIT)
                    if current is None:
                        return refused(CORRUPT, raw)
                new = current + change
                if new < 0:
                    return refused(0, current)
                if new > limit:
                    return refused(ABOVE_CEILING, new)
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

    def pause(self, job_id: str, *, default: object, maximum: object) -> int | None:
        limit = ceiling(argument(maximum))
        where = self.scope.where("pb_counts", "count")
        with self.scope.db.transaction() as conn:
            if self._stored(conn, "pb_paused", job_id) is not None:
                return None
            raw = self._stored(conn, "pb_counts", job_id)
            current = parse(argument(default) if raw is None else raw, 0, HARD_LIMIT)
            if current is None:
                status, value = (BAD_DEFAULT, default) if raw is None else (CORRUPT, raw)
                return outcome("pause", job_id, status, value, limit, where=where)
            if current > limit:
                return outcome("pause", job_id, ABOVE_CEILING, current, limit)
            self._store(conn, "pb_paused", job_id, current)
            self._store(conn, "pb_counts", job_id, 0)
            self.scope.bump(conn)
        return current

    def resume(self, job_id: str, *, maximum: object) -> int | None:
        limit = ceiling(argument(maximum))
        where = self.scope.where("pb_paused", "count")
        with self.scope.db.transaction() as conn:
            raw = self._stored(conn, "pb_paused", job_id)
            if raw is None:
                return None
            count = parse(raw, 0, HARD_LIMIT)
            if count is None:
                return outcome("resume", job_id, CORRUPT, raw, limit, where=where)
            if count > limit:
                return outcome("resume", job_id, ABOVE_CEILING, count, limit)
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
