"""Creating and checking the PostgreSQL backend's tables (``process-balancer migrate``).

The whole schema is created in one transaction, serialized by a transaction-level advisory
lock, so two processes starting at once on an empty database do not trip over each other and
a failure (a role without rights, say) leaves nothing half-created.
"""

from __future__ import annotations

import hashlib
import logging
from importlib import resources
from typing import Any, Literal

import psycopg
from psycopg import errors

from ..base import BackendError, MigrateResult
from .connections import PostgresURL, connect, one_line

logger = logging.getLogger(__name__)

#: Version of the tables and functions in ``backends/postgres/schema.sql``. The script runs only
#: when the stored version is older, so any change to it, a function body included, bumps this.
#: 2: pb_heartbeat locks its own member row before pruning others (no deadlock between two
#: expired members pruning each other); the group's incarnation, pb_departed, takeover grace
#: and fencing tokens that keep increasing across a restore. 3: pb_lock_acquire grants nothing
#: while the group's incarnation was begun by another server (a restore or a failover since).
#: 4: partitioned jobs: pb_groups.partitions (each job's count and generation, written with the
#: assignment and returned with a heartbeat's slots) and pb_gates (the generation gate of
#: worker locks taken under a job's generation). 5: pb_set_count takes p_unless_paused (leave a
#: paused job as it is, for the autoscaler); its version-4 signature stays, setting as before.
SCHEMA_VERSION = 5

TABLES = (
    "pb_schema",
    "pb_groups",
    "pb_members",
    "pb_assignments",
    "pb_counts",
    "pb_commands",
    "pb_acks",
    "pb_locks",
    "pb_gates",
    "pb_advisory_fences",
)


def schema_sql(quoted_schema: str) -> str:
    text = (resources.files(__package__) / "schema.sql").read_text()
    return text.replace("{schema}", quoted_schema).replace("{version}", str(SCHEMA_VERSION))


def _lock_key(schema: str) -> int:
    digest = hashlib.sha256(f"process_balancer:migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _installed_version(conn: psycopg.Connection[Any], target: PostgresURL) -> int | None:
    """The schema version found, or None when the tables do not exist yet."""
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{target.quoted_schema}.pb_schema",)
    ).fetchone()
    if row is None or not row[0]:
        return None
    found = conn.execute(f"SELECT version FROM {target.quoted_schema}.pb_schema").fetchone()
    return int(found[0]) if found is not None else 0


def _rights_problem(conn: psycopg.Connection[Any], target: PostgresURL) -> str | None:
    """What the connected role may not do on the existing tables, or None."""
    prefix = f"{target.quoted_schema}."
    row = conn.execute(
        "SELECT array(SELECT t FROM unnest(%s::text[]) t"
        " WHERE NOT has_table_privilege(%s || t, 'SELECT, INSERT, UPDATE, DELETE')),"
        " has_sequence_privilege(%s || 'pb_commands_id_seq', 'USAGE')",
        (list(TABLES), prefix, prefix),
    ).fetchone()
    missing, sequence_ok = (row[0], row[1]) if row is not None else ([], True)
    if not missing and sequence_ok:
        return None
    user = conn.info.user
    lacking = ", ".join(missing + ([] if sequence_ok else ["pb_commands_id_seq (USAGE)"]))
    return (
        f"role {user!r} lacks rights on {lacking} in schema {target.schema!r}; as the tables' "
        f"owner run GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "
        f"{target.quoted_schema} TO {user}; GRANT USAGE ON ALL SEQUENCES IN SCHEMA "
        f"{target.quoted_schema} TO {user}"
    )


def _refused(target: PostgresURL, user: str, database: str, exc: psycopg.Error) -> BackendError:
    return BackendError(
        f"role {user!r} may not create the process-balancer tables in schema {target.schema!r} "
        f"of database {database!r} ({one_line(exc.diag.message_primary or exc)}); nothing was "
        f"created. Grant it CREATE on the database (or USAGE and CREATE on an existing "
        f"schema {target.schema!r}), or run `process-balancer migrate --backend URL` once as a "
        "role that may, then grant this role SELECT, INSERT, UPDATE, DELETE on its tables"
    )


def migrate(target: PostgresURL) -> MigrateResult:
    """Create or upgrade the tables and functions in ``target.schema``; idempotent."""
    conn = connect(target.conninfo, purpose="migrate", display=target.display)
    with conn:
        user, database = conn.info.user, conn.info.dbname
        try:
            return _migrate(conn, target)
        except errors.InsufficientPrivilege as exc:
            raise _refused(target, user, database, exc) from exc
        except psycopg.Error as exc:
            raise BackendError(
                f"creating the tables in schema {target.schema!r} of {target.display} failed: "
                f"{one_line(exc)}; nothing was created"
            ) from exc


def _migrate(conn: psycopg.Connection[Any], target: PostgresURL) -> MigrateResult:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(target.schema),))
        previous = _installed_version(conn, target)
        if previous is not None and previous > SCHEMA_VERSION:
            raise BackendError(
                f"schema {target.schema!r} of {target.display} holds tables of version "
                f"{previous}, newer than this process-balancer's {SCHEMA_VERSION}; upgrade "
                "process-balancer"
            )
        if previous != SCHEMA_VERSION:
            found = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (target.schema,)
            ).fetchone()
            if found is None:
                conn.execute(f"CREATE SCHEMA {target.quoted_schema}")
            conn.execute(schema_sql(target.quoted_schema))
    outcome: Literal["created", "upgraded", "current"] = (
        "current" if previous == SCHEMA_VERSION else "created" if previous is None else "upgraded"
    )
    return MigrateResult(outcome, target.schema, conn.info.dbname, previous, SCHEMA_VERSION)


def ensure_schema(conn: psycopg.Connection[Any], target: PostgresURL) -> None:
    """Check the tables on ``conn``; create or upgrade them when missing or old (and log it).

    Raises BackendError with what to do when the role may not use or create them.
    """
    user = conn.info.user
    try:
        row = conn.execute(
            "SELECT has_schema_privilege(oid, 'USAGE') FROM pg_namespace WHERE nspname = %s",
            (target.schema,),
        ).fetchone()
        if row is not None and not row[0]:
            raise BackendError(
                f"role {user!r} may not use schema {target.schema!r} of {target.display}; as "
                f"its owner run GRANT USAGE ON SCHEMA {target.quoted_schema} TO {user} (and "
                "SELECT, INSERT, UPDATE, DELETE on its tables)"
            )
        exists = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f"{target.quoted_schema}.pb_schema",)
        ).fetchone()
        if exists is not None and exists[0]:
            problem = _rights_problem(conn, target)
            if problem is not None:
                raise BackendError(problem)
            if _installed_version(conn, target) == SCHEMA_VERSION:
                return
    except psycopg.Error as exc:
        raise BackendError(f"PostgreSQL at {target.display}: {one_line(exc)}") from exc
    result = migrate(target)
    if result.outcome == "created":
        logger.info(
            "created the process-balancer tables in schema %r of database %r (first run; "
            "`process-balancer migrate` does the same ahead of time)",
            result.schema,
            result.database,
        )
    elif result.outcome == "upgraded":
        logger.info(
            "upgraded the process-balancer tables in schema %r of database %r from version %s "
            "to %d",
            result.schema,
            result.database,
            result.previous_version,
            SCHEMA_VERSION,
        )
