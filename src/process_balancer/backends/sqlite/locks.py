"""Worker locks in the SQLite backend: token, fencing counter, holder and expiry per slot."""

from __future__ import annotations

import secrets
import time

from ..base import Acquired, CorruptStateError
from ..common import lock_lifetime, log_takeover
from .connection import Scope, emit, seconds


class LockTable:
    """Rows of ``pb_locks``. Renew and release compare the token inside their transaction, so
    they never touch a lock another holder took."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def acquire(
        self, name: str, holder: str, ttl: float, grace: float, token: str | None = None
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
            row = conn.execute(
                "SELECT token, fence, holder, expires_at, incarnation FROM pb_locks "
                "WHERE namespace = ? AND name = ?",
                (self.scope.namespace, name),
            ).fetchone()
            fence = 0
            if row is not None:
                current, fence_raw, current_holder, expires_at, lock_incarnation = row
                expires = seconds(expires_at)
                readable = (
                    isinstance(fence_raw, int)
                    and expires is not None
                    and (current is None or (isinstance(current_holder, str) and current_holder))
                )
                if not readable:
                    raise CorruptStateError(
                        f"worker lock {name!r} in {self.scope.where('pb_locks', f'name {name!r}')} "
                        f"holds {tuple(row)!r}, which is not a process-balancer lock; delete "
                        "that row if nothing else uses it"
                    )
                fence = int(fence_raw)
                live = current is not None and expires is not None and expires > now
                # Written by an earlier version (no incarnation): as if in the current one.
                same_incarnation = lock_incarnation in (None, incarnation[0])
                if live and current_holder != holder and same_incarnation:
                    # The lock names its holder: a crashed holder's lock is free takeover_grace
                    # after its membership expired, not after the lock's whole TTL.
                    deadline = self.scope.deadline(conn, str(current_holder))
                    if deadline is None:
                        deadline = self.scope.departed(conn, str(current_holder))
                    if deadline is not None and deadline + grace > now:
                        return None
                    previous = str(current_holder)
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
                    incarnation[0],
                ),
            )
        if previous is not None:
            log_takeover(name, previous)
        return Acquired(token=token, fence=fence)

    def renew(self, name: str, token: str, ttl: float) -> bool:
        with self.scope.db.transaction() as conn:
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
