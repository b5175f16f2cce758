"""Worker locks in PostgreSQL: a row of ``pb_locks`` per slot (token, fencing counter,
holder, expiry); ``pb_lock_acquire`` decides a takeover from the holder's membership. A lock
taken under a partitioned job's generation also goes through the job's ``pb_gates`` row (see
:class:`~..base.Gate`), in the same function call."""

from __future__ import annotations

import secrets

from ..base import Acquired, CorruptStateError, Gate
from ..codec import parse_partitions, report_once
from ..common import hold_ms, lock_ttl_ms, log_takeover
from .client import PostgresClient

#: pb_lock_acquire's refusals by the gate that are worth a log line (see schema.sql).
UNREADABLE_PARTITIONS = 3
UNREADABLE_GATE = 4


class PostgresLocks(PostgresClient):
    """The worker-lock operations of :class:`~.backend.PostgresBackend`."""

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
        status, fence, previous = self._fetch(
            "lock_acquire",
            (
                self.namespace,
                name,
                token,
                holder,
                lock_ttl_ms(ttl),
                hold_ms(grace),
                None if gate is None else gate.job_id,
                None if gate is None else gate.generation,
            ),
        )
        if status == UNREADABLE_PARTITIONS:
            self._unreadable_partitions(previous)
            return None
        if status == UNREADABLE_GATE and gate is not None:
            report_once(
                f"{self._where('pb_gates', gate.job_id)} holds {previous}, not a gate this "
                "program wrote; it is replaced, and no lock of the job is granted until every "
                "holder under the old one has stopped (the lock's ttl and takeover_grace)"
            )
            return None
        if status not in (1, 2):
            return None
        if status == 2:
            log_takeover(name, previous)
        return Acquired(token=token, fence=int(fence))

    def _unreadable_partitions(self, raw: str | None) -> None:
        where = self._group_where("partitions")
        try:
            parse_partitions(raw, where)
            problem = f"{where} holds {raw}, not partitions"
        except CorruptStateError as exc:
            problem = str(exc)
        report_once(f"{problem}; no lock of a partitioned job is granted until then")

    def lock_renew(
        self, name: str, token: str, ttl: float, *, grace: float = 0.0, gate: Gate | None = None
    ) -> bool:
        (renewed,) = self._fetch(
            "lock_renew",
            (
                self.namespace,
                name,
                token,
                lock_ttl_ms(ttl + grace),
                None if gate is None else gate.job_id,
                None if gate is None else gate.generation,
            ),
        )
        return bool(renewed)

    def lock_release(self, name: str, token: str) -> bool:
        (released,) = self._fetch("lock_release", (self.namespace, name, token, self.channel))
        return bool(released)
