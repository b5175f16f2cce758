"""Worker locks in Redis: ``lock:<job>:<index>`` holds ``<token> <fence> <incarnation>
<holder>`` with a TTL, ``fence:<job>:<index>`` the slot's fencing counter; lock_acquire.lua
decides a takeover from the holder's membership (that of ``member`` for a holder
``member#instance``). A lock of a partitioned job may be taken under its generation gate,
``gate:<job>``: a hash of the ``generation`` its locks are taken under, a ``lock:<name>``
field for each lock taken under it, and ``blocked_until`` (ms) for generation 0, a gate that
replaced an unreadable one and grants nothing before then."""

from __future__ import annotations

import secrets
from typing import Any

from ..base import REPAIR_HINT, Acquired, CorruptStateError, Gate, Problem
from ..codec import parse_partitions, shown
from ..codec import report_once as _report_once
from ..common import hold_ms, lock_ttl_ms, log_takeover, member_of
from .client import RedisClient

_REFUSED = (0, 3, 4)
_BAD_LOCK, _BAD_PARTITIONS, _BAD_GATE = 5, 6, 7


class RedisLocks(RedisClient):
    """The worker-lock operations of :class:`~.backend.RedisBackend`."""

    def lock_acquire(
        self,
        name: str,
        holder: str,
        ttl: float,
        *,
        grace: float = 0.0,
        token: str | None = None,
        gate: Gate | None = None,
    ) -> Acquired | None:
        token = token or secrets.token_hex(12)
        keys = [
            self.key("lock", name),
            self.key("fence", name),
            self._members,
            self._incarnation,
            self._departed,
        ]
        args: list[Any] = [token, holder, lock_ttl_ms(ttl + grace), hold_ms(grace)]
        if gate is not None:
            keys += [self._partitions, self.key("gate", gate.job_id)]
            args += [str(int(gate.generation)), gate.job_id, name, self.key("lock", "")]
        result = self._run("lock_acquire", keys, args)
        status = int(result[0])
        if status in _REFUSED:
            return None
        if status == _BAD_LOCK:
            _report_once(
                f"{result[1]} holds {shown(result[2])}, which is not a process-balancer lock; "
                "the slot is free when that key expires, within the lock's ttl and "
                "takeover_grace (its holder, if any, cannot renew it and stops by then)"
            )
            return None
        if status == _BAD_PARTITIONS:
            problem = self._partitions_problem(str(result[2]), result[3])
            _report_once(f"{problem}; no lock of a partitioned job is granted until then")
            return None
        if status == _BAD_GATE:
            _report_once(
                f"{result[1]} holds {result[2]}, not a gate this program wrote; it is replaced, "
                "and no lock of the job is granted until every holder under the old one has "
                "stopped (the lock's ttl and takeover_grace)"
            )
            return None
        if status == 2:
            log_takeover(name, result[2])
        return Acquired(token=token, fence=int(result[1]))

    def _partitions_problem(self, found: str, raw: Any) -> str:
        """What the lock script found unreadable in the partitions key (of type ``found``,
        holding ``raw``), as a heartbeat names it."""
        if found != "string":
            return str(
                Problem(
                    self._partitions, f"is a {found}, expected a string", REPAIR_HINT, "partitions"
                )
            )
        try:
            parse_partitions(raw, self._partitions)
        except CorruptStateError as exc:
            return str(exc)
        detail = f"holds {shown(raw)}, which the lock script cannot read"
        return str(Problem(self._partitions, detail, REPAIR_HINT, "partitions"))

    def lock_renew(
        self, name: str, token: str, ttl: float, *, grace: float = 0.0, gate: Gate | None = None
    ) -> bool:
        keys = [self.key("lock", name), self._incarnation]
        args: list[Any] = [token, lock_ttl_ms(ttl + grace)]
        if gate is not None:
            keys.append(self.key("gate", gate.job_id))
            args += [str(int(gate.generation)), name]
        return bool(self._run("lock_renew", keys, args))

    def lock_release(self, name: str, token: str) -> bool:
        released = self._run("lock_release", [self.key("lock", name)], [token, self.channel, name])
        return bool(released)

    def _lock_holders(self) -> dict[str, int]:
        """member -> ms its worker locks still live, for every member holding a lock now (a
        holder ``member#instance`` is ``member``'s)."""
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
                    member = member_of(parts[-1])
                    holders[member] = max(holders.get(member, 0), ttl)
        return holders
