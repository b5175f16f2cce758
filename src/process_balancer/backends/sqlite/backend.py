"""SQLite coordination backend: the embedded default, for every process of a group on one host.

The shared state lives in tables of one SQLite file (``sqlite_schema.sql``), keyed by
namespace. Each operation is one transaction (see :mod:`.sqlite_connection`), with the same
semantics as the Redis backend's Lua scripts: the version bump rules, the compare-and-set of
the assignment, the lock takeover once the holder's membership has expired, the fencing
counter, pause and resume, commands and acknowledgements.

Why one host only: the processes share the file through the operating system's file locks,
which are not reliable on network file systems, and membership deadlines are compared on the
wall clock (``time.time()``), which processes on one host share but hosts do not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ..base import (
    PRUNE_BATCH,
    Acquired,
    Backend,
    BackendError,
    Gate,
    GroupSnapshot,
    HeartbeatResult,
    Inspection,
    Partition,
    RepairReport,
    StopSignal,
)
from ..codec import decode_group, dump_partitions, heartbeat_partitions
from ..codec import dumps as _dumps
from ..codec import parse_slots as _parse_slots
from ..common import (
    ACK_TTL,
    COMMAND_TTL,
    decode_commands,
    unplaced_slots,
)
from .connection import Database, Scope, emit, missing_file, seconds, sqlite_path
from .counts import CountMethods, CountTable
from .events import listen
from .locks import LockTable
from .repair import read_group, repair


def single_host_notice(url: str, *, default: bool) -> str:
    """What a runner says once when its group coordinates through a SQLite file."""
    why = " (no backend configured and REDIS_URL unset)" if default else ""
    return (
        f"single-host mode: coordinating through the SQLite file {sqlite_path(url).resolve()}"
        f"{why}; every process of this group must run on this host. To spread the group over "
        "several hosts, set `backend:` in the config to a redis://host:6379/0 or "
        "postgresql://user@host/db URL (or export REDIS_URL)"
    )


class SQLiteBackend(CountMethods, Backend):
    """Shared group state in a SQLite file, rows keyed by ``namespace``."""

    multi_host = False

    @classmethod
    def open(cls, url: str, namespace: str, *, create: bool = True) -> SQLiteBackend:
        return cls(url, namespace, create=create)

    def scope_notice(self, *, default: bool) -> str:
        return single_host_notice(self.url, default=default)

    def __init__(self, url: str, namespace: str, *, create: bool = True) -> None:
        """``create=False`` (commands that only read) refuses a missing file with a
        BackendError instead of creating it and its directory."""
        self.url = url
        self.namespace = namespace
        self.path = sqlite_path(url)
        if not create and not self.path.exists():
            raise BackendError(missing_file(self.path))
        self.db = Database(self.path, create=create)
        self.scope = Scope(self.db, namespace)
        self._counts = CountTable(self.scope)
        self._locks = LockTable(self.scope)

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
        ns = self.namespace
        traits_json = _dumps(traits)
        with self.db.transaction() as conn:
            now = time.time()  # read once the write lock is held: deadlines only move later
            changed = False
            current = self.scope.incarnation(conn)
            why = ""
            if current is None:
                if known_incarnation:
                    why = "the backend no longer has the group state"
            elif known_incarnation == current[0] and self.scope.versions(conn)[0] < known_version:
                why = "the backend state went back to an older version"
            if current is None or why:
                incarnation = self.scope.new_incarnation(conn, now, now + hold if why else 0.0)
                changed = True
            else:
                incarnation = current[0]
            expired = conn.execute(
                "SELECT identity, deadline FROM pb_members WHERE namespace = ? AND deadline <= ? "
                "ORDER BY deadline LIMIT ?",
                (ns, now, PRUNE_BATCH),
            ).fetchall()
            for member, member_deadline in expired:
                if member != identity:
                    conn.execute(
                        "DELETE FROM pb_members WHERE namespace = ? AND identity = ?", (ns, member)
                    )
                    # Remembered so its worker locks are taken over only takeover_grace later.
                    conn.execute(
                        "INSERT INTO pb_departed (namespace, identity, deadline) "
                        "VALUES (?, ?, ?) ON CONFLICT (namespace, identity) "
                        "DO UPDATE SET deadline = excluded.deadline",
                        (ns, member, member_deadline),
                    )
                    changed = True
            if changed:
                conn.execute(
                    "DELETE FROM pb_departed WHERE namespace = ? AND deadline < ?", (ns, now - 3600)
                )
            old = conn.execute(
                "SELECT deadline, traits FROM pb_members WHERE namespace = ? AND identity = ?",
                (ns, identity),
            ).fetchone()
            # A member whose deadline passed is treated as new: peers may have taken its locks.
            old_deadline = None if old is None else seconds(old[0])
            joined = old_deadline is None or old_deadline <= now
            if joined or old is None or old[1] != traits_json:
                changed = True
            conn.execute(
                "INSERT INTO pb_members (namespace, identity, deadline, traits, info) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, identity) DO UPDATE SET "
                "deadline = excluded.deadline, traits = excluded.traits, info = excluded.info",
                (ns, identity, now + expiry, traits_json, _dumps(info)),
            )
            version = self.scope.bump(conn) if changed else self.scope.versions(conn)[0]
            av = self.scope.versions(conn)[1]
            slots_raw: str | None = None
            partitions_raw: object = None
            if av != seen_assignment_version:
                row = conn.execute(
                    "SELECT slots FROM pb_assignment WHERE namespace = ? AND identity = ?",
                    (ns, identity),
                ).fetchone()
                slots_raw = "{}" if row is None else str(row[0])
                group = conn.execute(
                    "SELECT partitions FROM pb_groups WHERE namespace = ?", (ns,)
                ).fetchone()
                partitions_raw = None if group is None else group[0]
            commands_raw = conn.execute(
                "SELECT body, expires_at FROM pb_commands WHERE namespace = ? AND identity = ? "
                "ORDER BY id",
                (ns, identity),
            ).fetchall()
            if commands_raw:
                conn.execute(
                    "DELETE FROM pb_commands WHERE namespace = ? AND identity = ?", (ns, identity)
                )
            # The soonest deadline of another member: the caller wakes then to prune it.
            soonest = conn.execute(
                "SELECT identity, deadline FROM pb_members WHERE namespace = ? "
                "ORDER BY deadline LIMIT 2",
                (ns,),
            ).fetchall()
        next_expiry = None
        for member, deadline in soonest:
            if member != identity and seconds(deadline) is not None:
                next_expiry = max(0.0, float(deadline) - now)
                break
        slots = partitions = None
        if slots_raw is not None:
            slots = _parse_slots(
                slots_raw, self.scope.where("pb_assignment", f"identity {identity!r}")
            )
            partitions = heartbeat_partitions(partitions_raw, self.scope.group_where("partitions"))
        return HeartbeatResult(
            joined=joined,
            changed=changed,
            version=version,
            assignment_version=av,
            slots=slots,
            commands=self._commands(identity, commands_raw, now),
            next_expiry=next_expiry,
            incarnation=incarnation,
            server_time=now,
            new_incarnation=why,
            partitions=partitions,
        )

    def reset_incarnation(self, expected: str, hold: float) -> str:
        with self.db.transaction() as conn:
            current = self.scope.incarnation(conn)
            if current is None or current[0] != expected:
                return "" if current is None else current[0]
            now = time.time()
            incarnation = self.scope.new_incarnation(conn, now, now + hold)
            self.scope.bump(conn)
            return incarnation

    def _commands(self, identity: str, rows: list[Any], now: float) -> list[dict[str, Any]]:
        """The commands of ``rows`` still within their lifetime (an unreadable expiry counts
        as within it: the command is decoded and judged by itself)."""
        live = []
        for body, expires_at in rows:
            expires = seconds(expires_at)
            if expires is None or expires > now:
                live.append(body)
        return decode_commands(live, identity)

    def leave(self, identity: str) -> None:
        ns = self.namespace
        with self.db.transaction() as conn:
            removed = conn.execute(
                "DELETE FROM pb_members WHERE namespace = ? AND identity = ?", (ns, identity)
            ).rowcount
            conn.execute(
                "DELETE FROM pb_commands WHERE namespace = ? AND identity = ?", (ns, identity)
            )
            if removed:
                self.scope.bump(conn)

    def snapshot(self) -> GroupSnapshot:
        with self.db.transaction(write=False) as conn:
            raw = read_group(self.scope, conn)
        return decode_group(raw, lenient=False).snapshot

    def inspect(self) -> Inspection:
        with self.db.transaction(write=False) as conn:
            raw = read_group(self.scope, conn)
        decoded = decode_group(raw, lenient=True)
        return Inspection(decoded.snapshot, decoded.paused, decoded.problems)

    def repair(self, *, apply: bool) -> RepairReport:
        return repair(self.scope, apply=apply)

    def write_assignment(
        self,
        version: int,
        slots: Mapping[str, Mapping[str, tuple[int, ...]]],
        unplaced: Mapping[str, tuple[int, ...]],
        partitions: Mapping[str, Partition] | None = None,
    ) -> bool:
        ns = self.namespace
        rows = [
            (ns, identity, _dumps({job: list(idx) for job, idx in slots[identity].items()}))
            for identity in sorted(slots)
        ]
        with self.db.transaction() as conn:
            current, stored = self.scope.versions(conn)
            # Compare-and-set: one assignment per version, and only for the current version.
            if current != version or stored == version:
                return False
            conn.execute("DELETE FROM pb_assignment WHERE namespace = ?", (ns,))
            conn.executemany(
                "INSERT INTO pb_assignment (namespace, identity, slots) VALUES (?, ?, ?)", rows
            )
            conn.execute(
                "UPDATE pb_groups SET assignment_version = ?, unplaced = ?, partitions = ? "
                "WHERE namespace = ?",
                (
                    version,
                    _dumps({k: list(v) for k, v in unplaced.items()}),
                    dump_partitions(partitions),
                    ns,
                ),
            )
            emit(conn, ns, "assignment")
        return True

    def unplaced(self) -> dict[str, list[int]]:
        with self.db.transaction(write=False) as conn:
            row = conn.execute(
                "SELECT unplaced FROM pb_groups WHERE namespace = ?", (self.namespace,)
            ).fetchone()
        return unplaced_slots(
            "{}" if row is None else str(row[0]), self.scope.where("pb_groups", "unplaced")
        )

    # -- remote commands ---------------------------------------------------------------------

    def send_command(self, identity: str, command: Mapping[str, Any]) -> bool:
        with self.db.transaction() as conn:
            now = time.time()
            conn.execute("DELETE FROM pb_commands WHERE expires_at <= ?", (now,))
            deadline = self.scope.deadline(conn, identity)
            if deadline is None or deadline <= now:
                return False
            conn.execute(
                "INSERT INTO pb_commands (namespace, identity, body, expires_at) "
                "VALUES (?, ?, ?, ?)",
                (self.namespace, identity, _dumps(command), now + COMMAND_TTL),
            )
            # Wake the member now; it also finds the command at its next heartbeat.
            emit(conn, self.namespace, f"command {identity}")
        return True

    def ack_command(self, identity: str, command_id: str, at: float) -> None:
        with self.db.transaction() as conn:
            now = time.time()
            conn.execute("DELETE FROM pb_acks WHERE expires_at <= ?", (now,))
            conn.execute(
                "INSERT INTO pb_acks (namespace, command_id, identity, at, expires_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, command_id, identity) "
                "DO UPDATE SET at = excluded.at, expires_at = excluded.expires_at",
                (self.namespace, command_id, identity, at, now + ACK_TTL),
            )

    def command_acks(self, command_id: str) -> dict[str, float]:
        with self.db.transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT identity, at FROM pb_acks "
                "WHERE namespace = ? AND command_id = ? AND expires_at > ?",
                (self.namespace, command_id, time.time()),
            ).fetchall()
        return {str(identity): seconds(at) or 0.0 for identity, at in rows}

    # -- worker locks ------------------------------------------------------------------------

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
        return self._locks.acquire(name, holder, ttl, grace, token, gate)

    def lock_renew(
        self, name: str, token: str, ttl: float, *, grace: float = 0.0, gate: Gate | None = None
    ) -> bool:
        return self._locks.renew(name, token, ttl + grace, gate)

    def lock_release(self, name: str, token: str) -> bool:
        return self._locks.release(name, token)

    # -- notifications -----------------------------------------------------------------------

    def listen(self, on_event: Callable[[str], None], stop: StopSignal) -> None:
        listen(self.db, self.namespace, on_event, stop)

    def close(self) -> None:
        self.db.close()
