"""``simple_redis``: a token lock with a TTL in the coordination backend's store."""

from __future__ import annotations

import contextlib
import secrets

from ..errors import BackendError
from .base import LockContext, LockDriver


class SimpleRedisLock(LockDriver):
    """A lock key holding ``<token> <fence> <holder>`` with a TTL of ``runtime_lock_timeout``.

    Renewal and release compare the token in a Lua script, so they never touch a lock that
    another holder took. The holder's identity is in the value so that a lock left by a
    crashed process can be taken over as soon as that process's membership expires, instead
    of after the full TTL; the fencing token (a per-slot counter incremented on every
    acquisition) lets a job's own writes reject a holder that was paused past that point.
    """

    supports_gate = True

    def __init__(self, context: LockContext) -> None:
        super().__init__(context)
        self._token: str | None = None
        #: The token of an attempt whose answer was lost: the lock may have been taken with it.
        self._unsure: str | None = None

    def try_acquire(self) -> int | None:
        context = self.context
        token = secrets.token_hex(12)
        try:
            acquired = context.backend.lock_acquire(
                context.name,
                context.holder,
                context.ttl,
                grace=context.grace,
                token=token,
                gate=self.gate,
            )
        except BackendError:
            self._unsure = token
            raise
        self._unsure = None  # a later attempt replaces whatever the lost one took
        if acquired is None:
            return None
        self._token = acquired.token
        return acquired.fence

    def renew(self) -> bool:
        if self._token is None:
            return False
        context = self.context
        return context.backend.lock_renew(
            context.name, self._token, context.ttl, grace=context.grace, gate=self.gate
        )

    def release(self) -> None:
        # The token is forgotten only once the backend answered, so a failed release can be
        # retried; the lock's key outlives its TTL by the grace, like at acquisition.
        token = self._token
        if token is not None:
            self.context.backend.lock_release(self.context.name, token)
            self._token = None

    def wait_hint(self) -> str | None:
        return f"released {self.context.name}"

    def close(self) -> None:
        """Give back a lock the last attempt may have taken although its answer was lost:
        otherwise a slot that moved on meanwhile waits out the lock's whole TTL, since the lock
        names a process that is alive. Released by its token, so it touches nothing else; if
        the backend does not answer either, the lock expires by itself."""
        token, self._unsure = self._unsure, None
        if token is not None and self._token is None:
            with contextlib.suppress(BackendError):
                self.context.backend.lock_release(self.context.name, token)
