"""Worker locks in Redis: ``lock:<job>:<index>`` holds ``<token> <fence> <incarnation>
<holder>`` with a TTL, ``fence:<job>:<index>`` the slot's fencing counter; lock_acquire.lua
decides a takeover from the holder's membership."""

from __future__ import annotations

import secrets

from ..base import Acquired
from ..codec import report_once as _report_once
from ..codec import shown
from ..common import hold_ms, lock_ttl_ms, log_takeover
from .client import RedisClient


class RedisLocks(RedisClient):
    """The worker-lock operations of :class:`~.backend.RedisBackend`."""

    def lock_acquire(
        self, name: str, holder: str, ttl: float, *, grace: float = 0.0, token: str | None = None
    ) -> Acquired | None:
        token = token or secrets.token_hex(12)
        result = self._run(
            "lock_acquire",
            [
                self.key("lock", name),
                self.key("fence", name),
                self._members,
                self._incarnation,
                self._departed,
            ],
            [token, holder, lock_ttl_ms(ttl + grace), hold_ms(grace)],
        )
        status = int(result[0])
        if status == 5:
            _report_once(
                f"{result[1]} holds {shown(result[2])}, which is not a process-balancer lock; "
                "the slot is free when that key expires, within the lock's ttl and "
                "takeover_grace (its holder, if any, cannot renew it and stops by then)"
            )
            return None
        if status in (0, 3, 4):
            return None
        if status == 2:
            log_takeover(name, result[2])
        return Acquired(token=token, fence=int(result[1]))

    def lock_renew(self, name: str, token: str, ttl: float, *, grace: float = 0.0) -> bool:
        renewed = self._run(
            "lock_renew",
            [self.key("lock", name), self._incarnation],
            [token, lock_ttl_ms(ttl + grace)],
        )
        return bool(renewed)

    def lock_release(self, name: str, token: str) -> bool:
        released = self._run("lock_release", [self.key("lock", name)], [token, self.channel, name])
        return bool(released)

    def _lock_holders(self) -> dict[str, int]:
        """identity -> ms its worker locks still live, for every holder of a lock now."""
        holders: dict[str, int] = {}
        with self._errors():
            keys = [
                str(k) for k in self.client.scan_iter(match=f"{self._prefix}lock:*", count=1000)
            ]
            with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.get(key)
                    pipe.pttl(key)
                found = pipe.execute(raise_on_error=False)
        for value, ttl in zip(found[::2], found[1::2], strict=True):
            if isinstance(value, str) and isinstance(ttl, int) and ttl > 0:
                # token fence incarnation holder (token fence holder from earlier versions)
                parts = value.split(" ")
                if len(parts) in (3, 4) and parts[1].isdigit():
                    holders[parts[-1]] = max(holders.get(parts[-1], 0), ttl)
        return holders
