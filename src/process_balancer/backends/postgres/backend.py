"""PostgreSQL coordination backend: one server-side function call per operation.

The functions in ``backends/postgres/schema.sql`` mirror the Redis backend's Lua scripts one for
one, so both backends have the same semantics: each operation is one round trip and one
transaction, made atomic by row locks; time is the database's ``clock_timestamp()``; events
go out with ``pg_notify`` on the group's channel with the payloads Redis publishes.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from psycopg import errors

from ...config.defaults import MAX_WORKERS
from ..base import (
    ACK_TTL_MS,
    COMMAND_TTL_MS,
    PRUNE_BATCH,
    Acquired,
    Backend,
    BackendError,
    GroupSnapshot,
    HeartbeatResult,
    Inspection,
    MigrateResult,
    RepairReport,
)
from ..codec import RawGroup, RawMember, decode_group
from ..codec import dumps as _dumps
from ..codec import parse_slots as _parse_slots
from ..common import (
    decode_commands,
    hold_ms,
    listen_with_retry,
    lock_ttl_ms,
    log_takeover,
    ms,
    readable_pauses,
    runtime_count,
    seconds,
    unplaced_slots,
)
from ..counts import argument, outcome
from .connections import ConnectionPool, channel_name, connect, one_line, parse_url, quote_ident
from .repair import Group, repair
from .schema import ensure_schema, migrate

#: Connections one process keeps for calls (the listener has its own). Calls are one short
#: round trip each, so one connection carries them all; see ``connections.py``.
POOL_SIZE = 1
#: Calls served before the others waiting for the connection: what keeps the membership and
#: the held worker locks alive.
URGENT_CALLS = frozenset({"heartbeat", "leave", "lock_renew"})

_SNAPSHOT = """
WITH t AS MATERIALIZED (SELECT clock_timestamp() AS now)
SELECT
    extract(epoch FROM t.now)::float8,
    coalesce(g.version, 0),
    coalesce(g.assignment_version, 0),
    coalesce(g.unplaced::text, '{{}}'),
    (SELECT coalesce(json_agg(json_build_array(m.identity, extract(epoch FROM m.deadline)::float8,
                                               m.traits::text, m.info::text)
                              ORDER BY m.deadline, m.identity), '[]')
     FROM {s}.pb_members m WHERE m.namespace = %(ns)s AND m.deadline > t.now),
    (SELECT coalesce(json_agg(json_build_array(c.job_id, c.count)), '[]')
     FROM {s}.pb_counts c WHERE c.namespace = %(ns)s AND c.count IS NOT NULL),
    (SELECT coalesce(json_agg(json_build_array(a.identity, a.slots::text)), '[]')
     FROM {s}.pb_assignments a WHERE a.namespace = %(ns)s),
    (SELECT coalesce(json_agg(json_build_array(c.job_id, c.resume_to)), '[]')
     FROM {s}.pb_counts c WHERE c.namespace = %(ns)s AND c.resume_to IS NOT NULL)
FROM t LEFT JOIN {s}.pb_groups g ON g.namespace = %(ns)s
"""


class PostgresBackend(Backend):
    """Shared group state in PostgreSQL tables of one schema, rows keyed by namespace.

    Opening it checks the tables and creates them on first use (see ``migrate``).
    """

    @classmethod
    def migrate(cls, url: str) -> MigrateResult:
        return migrate(parse_url(url))

    def __init__(self, url: str, namespace: str, *, create_tables: bool = True) -> None:
        self.url = url
        self.namespace = namespace
        self.target = parse_url(url)
        self.schema = self.target.schema
        self.channel = channel_name(self.schema, namespace)
        self._s = self.target.quoted_schema
        self._pool = ConnectionPool(
            self.target.conninfo, size=POOL_SIZE, purpose=namespace, display=self.display_url
        )
        if create_tables:
            try:
                with self._pool.connection() as conn:
                    ensure_schema(conn, self.target)
            except BaseException:
                self._pool.close()
                raise
        self._sql = {
            name: f"SELECT * FROM {self._s}.pb_{name}({', '.join(['%s'] * arity)})"
            for name, arity in (
                ("leave", 3),
                ("set_count", 7),
                ("clear_count", 3),
                ("pause", 5),
                ("resume", 4),
                ("ack_command", 5),
                ("lock_acquire", 6),
                ("reset_incarnation", 4),
                ("lock_renew", 4),
                ("lock_release", 4),
            )
        }
        self._sql["heartbeat"] = (
            f"SELECT * FROM {self._s}.pb_heartbeat("
            "%s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, %s, %s, %s, %s)"
        )
        self._sql["write_assignment"] = (
            f"SELECT * FROM {self._s}.pb_write_assignment(%s, %s, %s::jsonb, %s::jsonb, %s)"
        )
        self._sql["send_command"] = (
            f"SELECT * FROM {self._s}.pb_send_command(%s, %s, %s::jsonb, %s, %s)"
        )
        self._sql["snapshot"] = _SNAPSHOT.format(s=self._s)
        self._group = Group(self.schema, self._s, namespace, self.channel)

    def _where(self, table: str, key: str) -> str:
        return f"{self.schema}.{table}[{self.namespace}/{key}]"

    def _error(self, exc: psycopg.Error) -> BackendError:
        if isinstance(exc, (errors.UndefinedTable, errors.UndefinedFunction)):
            return BackendError(
                f"the process-balancer tables in schema {self.schema!r} of {self.display_url} "
                f"are missing or incomplete ({one_line(exc.diag.message_primary)}); run "
                f"`process-balancer migrate --backend URL`"
            )
        return BackendError(f"PostgreSQL at {self.display_url}: {one_line(exc)}")

    def _fetch(self, name: str, params: tuple[Any, ...] | dict[str, Any]) -> tuple[Any, ...]:
        try:
            with self._pool.connection(urgent=name in URGENT_CALLS) as conn:
                row = conn.execute(self._sql[name], params).fetchone()
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        if row is None:
            raise BackendError(f"PostgreSQL at {self.display_url}: {name} returned no row")
        return tuple(row)

    def _rows(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            with self._pool.connection() as conn:
                return [tuple(row) for row in conn.execute(query, params).fetchall()]
        except psycopg.Error as exc:
            raise self._error(exc) from exc

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
        slots = None
        if slots_raw is not None:
            slots = _parse_slots(slots_raw, self._where("pb_assignments", identity))
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
        now, version, av, unplaced, members, counts, assignment, paused = row
        group = f"{self.schema}.pb_groups[{self.namespace}]"
        raw = RawGroup(
            now=float(now),
            version=(f"{group}.version", version),
            assignment_version=(f"{group}.assignment_version", av),
            unplaced=(f"{group}.unplaced", unplaced),
        )
        for identity, deadline, traits, info in members:
            where = self._where("pb_members", identity)
            raw.members.append(
                RawMember(
                    identity, deadline, traits, info, where, f"{where}.traits", f"{where}.info"
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
            ),
        )
        where = self._where("pb_counts", job_id)
        count = outcome("set", job_id, status, result, limit, to=to, by=by, where=where)
        assert count is not None
        return count

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
        where = f"{self.schema}.pb_groups[{self.namespace}].unplaced"
        return unplaced_slots(rows[0][0] if rows else "{}", where)

    # -- remote commands ---------------------------------------------------------------------

    def send_command(self, identity: str, command: Mapping[str, Any]) -> bool:
        (queued,) = self._fetch(
            "send_command",
            (self.namespace, identity, _dumps(command), COMMAND_TTL_MS, self.channel),
        )
        return bool(queued)

    def ack_command(self, identity: str, command_id: str, at: float) -> None:
        self._fetch("ack_command", (self.namespace, command_id, identity, at, ACK_TTL_MS))

    def command_acks(self, command_id: str) -> dict[str, float]:
        rows = self._rows(
            f"SELECT identity, acked_at FROM {self._s}.pb_acks WHERE namespace = %s "
            "AND command_id = %s AND expires_at > clock_timestamp()",
            (self.namespace, command_id),
        )
        return {str(identity): float(at) for identity, at in rows}

    # -- worker locks ------------------------------------------------------------------------

    def lock_acquire(
        self, name: str, holder: str, ttl: float, *, grace: float = 0.0
    ) -> Acquired | None:
        token = secrets.token_hex(12)
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

    # -- notifications -----------------------------------------------------------------------

    def listen(self, on_event: Callable[[str], None], stop: threading.Event) -> None:
        def listen_once(subscribed: Callable[[], None]) -> None:
            conn = connect(
                self.target.conninfo,
                purpose=f"{self.namespace} listener",
                display=self.display_url,
            )
            try:
                conn.execute(f"LISTEN {quote_ident(self.channel)}")
                subscribed()
                while not stop.is_set():
                    # notifies() ends after the timeout, so a set ``stop`` is seen promptly.
                    for note in conn.notifies(timeout=0.5):
                        on_event(note.payload)
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.close()

        listen_with_retry(
            listen_once,
            on_event,
            stop,
            failures=(psycopg.Error, BackendError),
            what=f"LISTEN on PostgreSQL at {self.display_url}",
            explain=one_line,
        )

    def ping(self) -> float:
        """Round-trip time to PostgreSQL in seconds."""
        started = time.perf_counter()
        self._rows("SELECT 1", ())
        return time.perf_counter() - started

    def close(self) -> None:
        self._pool.close()
