"""PostgreSQL coordination backend: one server-side function call per operation.

The functions in ``backends/postgres/schema.sql`` mirror the Redis backend's Lua scripts one for
one, so both backends have the same semantics: each operation is one round trip and one
transaction, made atomic by row locks; time is the database's ``clock_timestamp()``; events
go out with ``pg_notify`` on the group's channel with the payloads Redis publishes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import psycopg

from ...config.defaults import MAX_WORKERS
from ..base import (
    PRUNE_BATCH,
    BackendError,
    GroupSnapshot,
    HeartbeatResult,
    Inspection,
    Partition,
    RepairReport,
)
from ..codec import RawGroup, RawMember, decode_group, dump_partitions, heartbeat_partitions
from ..codec import dumps as _dumps
from ..codec import parse_slots as _parse_slots
from ..common import (
    decode_commands,
    hold_ms,
    ms,
    readable_pauses,
    runtime_count,
    seconds,
    unplaced_slots,
)
from ..counts import argument, outcome
from .commands import PostgresCommands
from .locks import PostgresLocks
from .repair import repair


class PostgresBackend(PostgresLocks, PostgresCommands):
    """Shared group state in PostgreSQL tables of one schema, rows keyed by namespace.

    Opening it checks the tables and creates them on first use (see ``migrate``).
    Membership, the assignment and the worker counts are here; worker locks in
    :mod:`.locks`, remote commands and events in :mod:`.commands`, the pool and the
    statements in :mod:`.client`.
    """

    # -- membership --------------------------------------------------------------------------

    def heartbeat(
        self,
        identity: str,
        *,
        traits: Mapping[str, Any],
        info: Mapping[str, Any],
        expiry: float,
        seen_assignment_version: int,
        known_incarnation: str = "",
        known_version: int = 0,
        hold: float = 0.0,
    ) -> HeartbeatResult:
        (
            joined,
            changed,
            version,
            av,
            slots_raw,
            commands_raw,
            next_expiry_ms,
            incarnation,
            server_time,
            why,
            partitions_raw,
        ) = self._fetch(
            "heartbeat",
            (
                self.namespace,
                identity,
                _dumps(traits),
                _dumps(info),
                ms(expiry),
                seen_assignment_version,
                self.channel,
                PRUNE_BATCH,
                hold_ms(hold),
                known_incarnation,
                known_version,
            ),
        )
        slots = partitions = None
        if slots_raw is not None:
            slots = _parse_slots(slots_raw, self._where("pb_assignments", identity))
            partitions = heartbeat_partitions(partitions_raw, self._group_where("partitions"))
        return HeartbeatResult(
            joined=bool(joined),
            changed=bool(changed),
            version=int(version),
            assignment_version=int(av),
            slots=slots,
            commands=decode_commands(json.loads(commands_raw), identity, parsed=True),
            next_expiry=None if next_expiry_ms is None else seconds(int(next_expiry_ms)),
            incarnation=str(incarnation),
            server_time=float(server_time),
            new_incarnation=str(why or ""),
            partitions=partitions,
        )

    def reset_incarnation(self, expected: str, hold: float) -> str:
        (current,) = self._fetch(
            "reset_incarnation",
            (self.namespace, expected, hold_ms(hold), self.channel),
        )
        return str(current)

    def leave(self, identity: str) -> None:
        self._fetch("leave", (self.namespace, identity, self.channel))

    def read_group(self, row: tuple[Any, ...]) -> RawGroup:
        """A row of the snapshot query, undecoded, with where each value lives."""
        now, version, av, unplaced, partitions, members, counts, assignment, paused = row
        where = self._group_where
        raw = RawGroup(
            now=float(now),
            version=(where("version"), version),
            assignment_version=(where("assignment_version"), av),
            unplaced=(where("unplaced"), unplaced),
            partitions=(where("partitions"), partitions),
        )
        for identity, deadline, traits, info in members:
            row_where = self._where("pb_members", identity)
            raw.members.append(
                RawMember(
                    identity,
                    deadline,
                    traits,
                    info,
                    row_where,
                    f"{row_where}.traits",
                    f"{row_where}.info",
                )
            )
        raw.counts = [(j, c, self._where("pb_counts", j) + ".count") for j, c in counts]
        raw.paused = [(j, c, self._where("pb_counts", j) + ".resume_to") for j, c in paused]
        raw.assignment = [(i, a, self._where("pb_assignments", i)) for i, a in assignment]
        return raw

    def _read_through(self, conn: psycopg.Connection[Any]) -> RawGroup:
        row = conn.execute(self._sql["snapshot"], {"ns": self.namespace}).fetchone()
        if row is None:
            raise BackendError(f"PostgreSQL at {self.display_url}: snapshot returned no row")
        return self.read_group(tuple(row))

    def snapshot(self) -> GroupSnapshot:
        raw = self.read_group(self._fetch("snapshot", {"ns": self.namespace}))
        return decode_group(raw, lenient=False).snapshot

    def inspect(self) -> Inspection:
        raw = self.read_group(self._fetch("snapshot", {"ns": self.namespace}))
        decoded = decode_group(raw, lenient=True)
        return Inspection(decoded.snapshot, decoded.paused, decoded.problems)

    def repair(self, *, apply: bool) -> RepairReport:
        try:
            with self._pool.connection() as conn, conn.transaction():
                return repair(conn, self._group, self._read_through, apply=apply)
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def write_assignment(
        self,
        version: int,
        slots: Mapping[str, Mapping[str, tuple[int, ...]]],
        unplaced: Mapping[str, tuple[int, ...]],
        partitions: Mapping[str, Partition] | None = None,
    ) -> bool:
        stored = {
            identity: {job: list(idx) for job, idx in per_job.items()}
            for identity, per_job in slots.items()
        }
        (written,) = self._fetch(
            "write_assignment",
            (
                self.namespace,
                version,
                _dumps(stored),
                _dumps({k: list(v) for k, v in unplaced.items()}),
                dump_partitions(partitions),
                self.channel,
            ),
        )
        return bool(written)

    # -- worker counts -----------------------------------------------------------------------

    def get_count(self, job_id: str) -> int | None:
        rows = self._rows(
            f"SELECT count FROM {self._s}.pb_counts WHERE namespace = %s AND job_id = %s",
            (self.namespace, job_id),
        )
        where = self._where("pb_counts", job_id) + ".count"
        return runtime_count(rows[0][0] if rows else None, where)

    def set_count(
        self,
        job_id: str,
        *,
        to: int | None,
        by: int | None,
        default: int,
        maximum: int = MAX_WORKERS,
    ) -> int:
        count = self._set_count(job_id, to, by, default, maximum, unless_paused=False)
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
        return self._set_count(job_id, to, by, default, maximum, unless_paused=True)

    def _set_count(
        self,
        job_id: str,
        to: object,
        by: object,
        default: object,
        maximum: object,
        *,
        unless_paused: bool,
    ) -> int | None:
        mode, value = ("to", to) if to is not None else ("by", by)
        status, result, limit = self._fetch(
            "set_count",
            (
                self.namespace,
                job_id,
                mode,
                argument(value),
                argument(default),
                self.channel,
                argument(maximum),
                unless_paused,
            ),
        )
        where = self._where("pb_counts", job_id)
        return outcome("set", job_id, status, result, limit, to=to, by=by, where=where)

    def clear_count(self, job_id: str) -> None:
        self._fetch("clear_count", (self.namespace, job_id, self.channel))

    def pause(self, job_id: str, *, default: int, maximum: int = MAX_WORKERS) -> int | None:
        status, value, limit = self._fetch(
            "pause",
            (self.namespace, job_id, argument(default), self.channel, argument(maximum)),
        )
        return outcome("pause", job_id, status, value, limit)

    def resume(self, job_id: str, *, maximum: int = MAX_WORKERS) -> int | None:
        status, value, limit = self._fetch(
            "resume", (self.namespace, job_id, self.channel, argument(maximum))
        )
        return outcome("resume", job_id, status, value, limit)

    def paused_counts(self) -> dict[str, int]:
        rows = self._rows(
            f"SELECT job_id, resume_to FROM {self._s}.pb_counts "
            "WHERE namespace = %s AND resume_to IS NOT NULL",
            (self.namespace,),
        )
        return readable_pauses(
            (job_id, raw, self._where("pb_counts", job_id) + ".resume_to") for job_id, raw in rows
        )

    def unplaced(self) -> dict[str, list[int]]:
        rows = self._rows(
            f"SELECT unplaced::text FROM {self._s}.pb_groups WHERE namespace = %s",
            (self.namespace,),
        )
        return unplaced_slots(rows[0][0] if rows else "{}", self._group_where("unplaced"))
