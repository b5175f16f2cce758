"""Worker locks in PostgreSQL: a row of ``pb_locks`` per slot (token, fencing counter,
holder, expiry); ``pb_lock_acquire`` decides a takeover from the holder's membership."""

from __future__ import annotations

import secrets

from ..base import Acquired
from ..common import hold_ms, lock_ttl_ms, log_takeover
from .client import PostgresClient


class PostgresLocks(PostgresClient):
    """The worker-lock operations of :class:`~.backend.PostgresBackend`."""

    def lock_acquire(
        self, name: str, holder: str, ttl: float, *, grace: float = 0.0, token: str | None = None
    ) -> Acquired | None:
        token = token or secrets.token_hex(12)
        status, fence, previous = self._fetch(
            "lock_acquire",
            (
                self.namespace,
                name,
                token,
                holder,
                lock_ttl_ms(ttl),
                hold_ms(grace),
            ),
        )
        if status == 0:
            return None
        if status == 2:
            log_takeover(name, previous)
        return Acquired(token=token, fence=int(fence))

    def lock_renew(self, name: str, token: str, ttl: float, *, grace: float = 0.0) -> bool:
        (renewed,) = self._fetch(
            "lock_renew", (self.namespace, name, token, lock_ttl_ms(ttl + grace))
        )
        return bool(renewed)

    def lock_release(self, name: str, token: str) -> bool:
        (released,) = self._fetch("lock_release", (self.namespace, name, token, self.channel))
        return bool(released)
