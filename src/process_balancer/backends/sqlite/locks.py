"""Worker locks in the SQLite backend: token, fencing counter, holder and expiry per slot, and
the generation gate a lock of a partitioned job is taken under (:mod:`.gates`)."""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass

from ..base import Acquired, CorruptStateError, Gate
from ..common import lock_lifetime, log_takeover, member_of
from .connection import Scope, emit, seconds
from .gates import Gates


@dataclass(frozen=True)
class LockRow:
    """A stored lock, read: its fencing counter and, while it is held (taken, not released,
    not expired), its holder and the incarnation it was taken in (None: written by an
    earlier version, as if in the current one)."""

    fence: int
    held: bool
    holder: str
    incarnation: object


class LockTable:
    """Rows of ``pb_locks``. Renew and release compare the token inside their transaction, so
    they never touch a lock another holder took."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.gates = Gates(scope)

    def _row(self, conn: sqlite3.Connection, name: str, now: float) -> LockRow | None:
        """The lock's row; a row this program did not write is a CorruptStateError."""
        row = conn.execute(
            "SELECT token, fence, holder, expires_at, incarnation FROM pb_locks "
            "WHERE namespace = ? AND name = ?",
            (self.scope.namespace, name),
        ).fetchone()
        if row is None:
            return None
        token, fence, holder, expires_at, incarnation = row
        expires = seconds(expires_at)
        if (
            not isinstance(fence, int)
            or expires is None
            or (token is not None and not (isinstance(holder, str) and holder))
        ):
            raise CorruptStateError(
                f"worker lock {name!r} in {self.scope.where('pb_locks', f'name {name!r}')} "
                f"holds {tuple(row)!r}, which is not a process-balancer lock; delete "
                "that row if nothing else uses it"
            )
        held = token is not None and expires > now
        return LockRow(fence, held, str(holder) if held else "", incarnation)

    def _holder_alive(
        self, conn: sqlite3.Connection, holder: str, now: float, grace: float
    ) -> bool:
        """The member the holder belongs to has a membership deadline less than ``grace``
        ago: a crashed holder's lock is free takeover_grace after its membership expired,
        not after the lock's whole TTL."""
        member = member_of(holder)
        deadline = self.scope.deadline(conn, member)
        if deadline is None:
            deadline = self.scope.departed(conn, member)
        return deadline is not None and deadline + grace > now

    def _is_free(
        self, conn: sqlite3.Connection, name: str, now: float, grace: float, incarnation: str
    ) -> bool:
        """Nobody may still run under lock ``name``: it is absent, released or expired, of
        an earlier incarnation, or its holder's membership ended ``grace`` ago."""
        row = self._row(conn, name, now)
        if row is None or not row.held or row.incarnation not in (None, incarnation):
            return True
        return not self._holder_alive(conn, row.holder, now, grace)

    def acquire(
        self,
        name: str,
        holder: str,
        ttl: float,
        grace: float,
        token: str | None = None,
        gate: Gate | None = None,
    ) -> Acquired | None:
        token = token or secrets.token_hex(12)
        previous: str | None = None
        with self.scope.db.transaction() as conn:
            now = time.time()
            incarnation = self.scope.incarnation(conn)
            if incarnation is None or now < incarnation[1] + grace:
                # No heartbeat has reached this file since it lost the group's state, or a new
                # incarnation is waiting for the holders of the old one to stop.
                return None
            current = incarnation[0]
            record = None
            if gate is not None:
                record = self.gates.admits(
                    conn,
                    gate,
                    now,
                    ttl,
                    grace,
                    lambda other: self._is_free(conn, other, now, grace, current),
                )
                if record is None:
                    return None
            row = self._row(conn, name, now)
            fence = 0 if row is None else row.fence
            if (
                row is not None
                and row.held
                and row.holder != holder
                and row.incarnation in (None, current)
            ):
                if self._holder_alive(conn, row.holder, now, grace):
                    return None
                previous = row.holder
            # At least the clock in microseconds: tokens keep increasing even if the file is
            # replaced by an older copy.
            fence = max(fence + 1, int(now * 1_000_000))
            conn.execute(
                "INSERT INTO pb_locks "
                "(namespace, name, token, fence, holder, expires_at, incarnation) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (namespace, name) DO UPDATE SET "
                "token = excluded.token, fence = excluded.fence, holder = excluded.holder, "
                "expires_at = excluded.expires_at, incarnation = excluded.incarnation",
                (
                    self.scope.namespace,
                    name,
                    token,
                    fence,
                    holder,
                    now + lock_lifetime(ttl + grace),
                    current,
                ),
            )
            if gate is not None and record is not None:
                self.gates.add(conn, gate.job_id, record, name)
        if previous is not None:
            log_takeover(name, previous)
        return Acquired(token=token, fence=fence)

    def renew(self, name: str, token: str, ttl: float, gate: Gate | None = None) -> bool:
        with self.scope.db.transaction() as conn:
            if gate is not None and not self.gates.keeps(conn, gate, name):
                return False
            now = time.time()
            renewed = conn.execute(
                "UPDATE pb_locks SET expires_at = ? "
                "WHERE namespace = ? AND name = ? AND token = ? AND expires_at > ? "
                "AND (incarnation IS NULL OR incarnation = "
                "(SELECT id FROM pb_incarnations WHERE namespace = pb_locks.namespace))",
                (now + lock_lifetime(ttl), self.scope.namespace, name, token, now),
            ).rowcount
        return renewed == 1

    def release(self, name: str, token: str) -> bool:
        with self.scope.db.transaction() as conn:
            released = conn.execute(
                "UPDATE pb_locks SET token = NULL, holder = NULL, expires_at = 0 "
                "WHERE namespace = ? AND name = ? AND token = ? AND expires_at > ?",
                (self.scope.namespace, name, token, time.time()),
            ).rowcount
            if released:
                emit(conn, self.scope.namespace, f"released {name}")
        return released == 1
