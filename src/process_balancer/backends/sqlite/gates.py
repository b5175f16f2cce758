"""The generation gate of partitioned jobs in the SQLite backend (see :class:`~..base.Gate`):
one ``pb_gates`` row per job, read and written inside the lock operation's transaction."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

from ..base import CorruptStateError, Gate
from ..codec import parse_partitions, report_once, shown
from ..common import lock_lifetime
from .connection import Scope, seconds


@dataclass
class GateRecord:
    """A job's gate: the generation its locks are taken under and every lock name taken
    under it. ``generation`` 0 grants nothing before ``blocked_until`` (it replaced an
    unreadable record)."""

    generation: int
    names: list[str] = field(default_factory=list)
    blocked_until: float = 0.0


def parse_gate(row: tuple[object, object, object]) -> GateRecord | None:
    """A stored ``(generation, blocked_until, names)`` row, or None when it is not one this
    program wrote."""
    generation, blocked_raw, names_raw = row
    blocked_until = seconds(blocked_raw)
    if not isinstance(generation, int) or generation < 0 or blocked_until is None:
        return None
    if not isinstance(names_raw, str):
        return None
    try:
        names = json.loads(names_raw)
    except ValueError:
        return None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return None
    return GateRecord(generation, names, blocked_until)


class Gates:
    """Rows of ``pb_gates`` of one namespace."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def where(self, job_id: str) -> str:
        return self.scope.where("pb_gates", f"job {job_id!r}")

    def _read(self, conn: sqlite3.Connection, job_id: str) -> tuple[object, object, object] | None:
        row = conn.execute(
            "SELECT generation, blocked_until, names FROM pb_gates "
            "WHERE namespace = ? AND job_id = ?",
            (self.scope.namespace, job_id),
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def write(self, conn: sqlite3.Connection, job_id: str, record: GateRecord) -> None:
        conn.execute(
            "INSERT INTO pb_gates (namespace, job_id, generation, blocked_until, names) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, job_id) DO UPDATE SET "
            "generation = excluded.generation, blocked_until = excluded.blocked_until, "
            "names = excluded.names",
            (
                self.scope.namespace,
                job_id,
                record.generation,
                record.blocked_until,
                json.dumps(record.names, separators=(",", ":")),
            ),
        )

    def _stored_generation(self, conn: sqlite3.Connection, job_id: str) -> int | None:
        """The job's generation in the stored partitions (None: none, or unreadable)."""
        row = conn.execute(
            "SELECT partitions FROM pb_groups WHERE namespace = ?", (self.scope.namespace,)
        ).fetchone()
        try:
            stored = parse_partitions(
                None if row is None else row[0], self.scope.group_where("partitions")
            )
        except CorruptStateError as exc:
            report_once(f"{exc}; no lock of a partitioned job is granted until then")
            return None
        partition = stored.get(job_id)
        return None if partition is None else partition.generation

    def admits(
        self,
        conn: sqlite3.Connection,
        gate: Gate,
        now: float,
        ttl: float,
        grace: float,
        is_free: Callable[[str], bool],
    ) -> GateRecord | None:
        """The job's gate record if a lock may be taken under ``gate`` now (the caller adds
        the lock's name with :meth:`add` once granted), else None; moves the gate to a new
        generation once every lock of the earlier one ``is_free``."""
        if self._stored_generation(conn, gate.job_id) != gate.generation:
            return None
        row = self._read(conn, gate.job_id)
        record = None if row is None else parse_gate(row)
        if row is not None and record is None:
            report_once(
                f"{self.where(gate.job_id)} holds {shown(row)}, not a gate this program "
                "wrote; it is replaced, and no lock of the job is granted until every holder "
                "under the old one has stopped (the lock's ttl and takeover_grace)"
            )
            blocked = GateRecord(0, [], now + lock_lifetime(ttl + grace))
            self.write(conn, gate.job_id, blocked)
            return None
        if record is None or (record.generation == 0 and now >= record.blocked_until):
            record = GateRecord(gate.generation)
            self.write(conn, gate.job_id, record)
            return record
        if record.generation == gate.generation:
            return record
        if record.generation == 0:
            return None
        if not all(is_free(name) for name in record.names):
            return None
        record = GateRecord(gate.generation)
        self.write(conn, gate.job_id, record)
        return record

    def add(self, conn: sqlite3.Connection, job_id: str, record: GateRecord, name: str) -> None:
        """Record that lock ``name`` was taken under the job's gate ``record``."""
        if name not in record.names:
            record.names.append(name)
            self.write(conn, job_id, record)

    def keeps(self, conn: sqlite3.Connection, gate: Gate, name: str) -> bool:
        """A lock taken under ``gate`` may be renewed: its job's gate is still at that
        generation with the lock in it."""
        row = self._read(conn, gate.job_id)
        record = None if row is None else parse_gate(row)
        return record is not None and record.generation == gate.generation and name in record.names
