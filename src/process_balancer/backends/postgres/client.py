"""The connection to PostgreSQL behind every PostgreSQL backend operation: the pool, the
statement of each operation (a call of its function in ``schema.sql``), and what a failure
means (missing tables ask for ``process-balancer migrate``; anything else is a BackendError).
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import errors

from ..base import Backend, BackendError, MigrateResult
from .connections import ConnectionPool, channel_name, one_line, parse_url
from .repair import Group
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
    g.partitions::text,
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


class PostgresClient(Backend):
    """The pool, statements and schema of one group in PostgreSQL; the operations are in the
    classes built on it (:class:`~.backend.PostgresBackend`)."""

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
                ("set_count", 8),
                ("clear_count", 3),
                ("pause", 5),
                ("resume", 4),
                ("ack_command", 5),
                ("lock_acquire", 8),
                ("reset_incarnation", 4),
                ("lock_renew", 6),
                ("lock_release", 4),
            )
        }
        self._sql["heartbeat"] = (
            f"SELECT * FROM {self._s}.pb_heartbeat("
            "%s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, %s, %s, %s, %s)"
        )
        self._sql["write_assignment"] = (
            f"SELECT * FROM {self._s}.pb_write_assignment("
            "%s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s)"
        )
        self._sql["send_command"] = (
            f"SELECT * FROM {self._s}.pb_send_command(%s, %s, %s::jsonb, %s, %s)"
        )
        self._sql["snapshot"] = _SNAPSHOT.format(s=self._s)
        self._group = Group(self.schema, self._s, namespace, self.channel)

    def _where(self, table: str, key: str) -> str:
        return f"{self.schema}.{table}[{self.namespace}/{key}]"

    def _group_where(self, column: str) -> str:
        """Where a column of the group's ``pb_groups`` row is."""
        return f"{self.schema}.pb_groups[{self.namespace}].{column}"

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

    def ping(self) -> float:
        """Round-trip time to PostgreSQL in seconds."""
        started = time.perf_counter()
        self._rows("SELECT 1", ())
        return time.perf_counter() - started

    def close(self) -> None:
        self._pool.close()
