"""Worker counts set at runtime, and pause/resume, in the SQLite backend.

A stored count that is not an integer was written by something else: it is reported where it
is read and kept as it is, never overwritten by a guess.
"""

from __future__ import annotations

import sqlite3

from ...config.defaults import MAX_WORKERS
from ..common import readable_pauses, runtime_count
from ..counts import count_to_pause, count_to_resume, count_to_set
from .connection import Scope


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
        """The runtime count of ``job_id`` (see Backend.get_count)."""
        with self.scope.db.transaction(write=False) as conn:
            raw = self._stored(conn, "pb_counts", job_id)
        where = self.scope.where("pb_counts", f"job {job_id!r}")
        return None if raw is None else runtime_count(raw, where)

    def paused(self) -> dict[str, int]:
        """Paused jobs with the counts they resume to (see Backend.paused_counts)."""
        with self.scope.db.transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT job_id, count FROM pb_paused WHERE namespace = ?", (self.scope.namespace,)
            ).fetchall()
        where = self.scope.where
        return readable_pauses((job, raw, where("pb_paused", f"job {job!r}")) for job, raw in rows)

    def set(
        self,
        job_id: str,
        *,
        to: object,
        by: object,
        default: object,
        maximum: object,
        unless_paused: bool = False,
    ) -> int | None:
        """Set or change the count (see Backend.set_count); None (nothing written) when
        ``unless_paused`` and the job is paused."""
        where = self.scope.where("pb_counts", "count")
        with self.scope.db.transaction() as conn:
            new = count_to_set(
                job_id,
                lambda: self._stored(conn, "pb_counts", job_id),
                to=to,
                by=by,
                default=default,
                maximum=maximum,
                where=where,
            )
            if unless_paused and self._stored(conn, "pb_paused", job_id) is not None:
                return None
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
        where = self.scope.where("pb_counts", "count")
        with self.scope.db.transaction() as conn:
            if self._stored(conn, "pb_paused", job_id) is not None:
                return None
            raw = self._stored(conn, "pb_counts", job_id)
            current = count_to_pause(job_id, raw, default=default, maximum=maximum, where=where)
            self._store(conn, "pb_paused", job_id, current)
            self._store(conn, "pb_counts", job_id, 0)
            self.scope.bump(conn)
        return current

    def resume(self, job_id: str, *, maximum: object) -> int | None:
        where = self.scope.where("pb_paused", "count")
        with self.scope.db.transaction() as conn:
            raw = self._stored(conn, "pb_paused", job_id)
            if raw is None:
                return None
            count = count_to_resume(job_id, raw, maximum=maximum, where=where)
            self._store(conn, "pb_counts", job_id, count)
            self._forget(conn, "pb_paused", job_id)
            self.scope.bump(conn)
        return count


class CountMethods:
    """The worker-count operations of :class:`~.backend.SQLiteBackend`, on its table."""

    _counts: CountTable

    def get_count(self, job_id: str) -> int | None:
        return self._counts.get(job_id)

    def set_count(
        self,
        job_id: str,
        *,
        to: int | None,
        by: int | None,
        default: int,
        maximum: int = MAX_WORKERS,
    ) -> int:
        count = self._counts.set(job_id, to=to, by=by, default=default, maximum=maximum)
        assert count is not None
        return count

    def set_count_unless_paused(
        self,
        job_id: str,
        *,
        to: int | None,
        by: int | None,
        default: int,
        maximum: int = MAX_WORKERS,
    ) -> int | None:
        counts = self._counts
        return counts.set(
            job_id, to=to, by=by, default=default, maximum=maximum, unless_paused=True
        )

    def clear_count(self, job_id: str) -> None:
        self._counts.clear(job_id)

    def pause(self, job_id: str, *, default: int, maximum: int = MAX_WORKERS) -> int | None:
        return self._counts.pause(job_id, default=default, maximum=maximum)

    def resume(self, job_id: str, *, maximum: int = MAX_WORKERS) -> int | None:
        return self._counts.resume(job_id, maximum=maximum)

    def paused_counts(self) -> dict[str, int]:
        return self._counts.paused()
