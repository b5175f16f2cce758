"""``advisory_lock``: a PostgreSQL session-level advisory lock per worker slot.

The lock is held by a connection of its own, opened for that one lock and closed when it is
released, or at once when the lock is held elsewhere: a process keeps one connection per held
lock and none for workers waiting for one. It never goes back to a pool, where the next user
of the connection would inherit the lock. Losing the connection means losing the lock, so
:meth:`AdvisoryLock.renew` is a ``SELECT 1`` on it (every second) and the iteration stops
when that fails.

Lock key: the first 8 bytes of ``sha256("process_balancer:<namespace>:<job_id>:<index>")``
read as a signed big-endian 64-bit integer, the single-``bigint`` form of
``pg_try_advisory_lock``. Every process of a group derives the same key; other programs'
advisory locks are very unlikely to collide with it.

The database is the job option ``advisory_lock_url``, else the backend's URL when the backend
is PostgreSQL. Its ``?schema=`` (default ``process_balancer``) holds the per-slot fencing
counters in ``pb_advisory_fences``, created with the backend's tables when missing.

A dead holder's lock frees when PostgreSQL notices its connection is gone: at once when the
holder process dies and its host closes the socket (kill -9), within about 8 s when the host
or the network dies (the server's TCP keepalives). The other side notices first: the holder's
``SELECT 1`` fails within about 3 s of losing the network (TCP user timeout), so its iteration
stops before the server can give the lock to anyone else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..backends import registry
from ..backends.base import BackendError, redact_url
from .base import LockContext, LockDriver

if TYPE_CHECKING:
    import psycopg

    from ..backends.base import Backend
    from ..backends.postgres.connections import PostgresURL

#: The job option naming the lock database.
URL_OPTION = "advisory_lock_url"
#: Seconds between connection checks of a held lock.
CHECK_INTERVAL = 1.0
#: Server settings of a lock connection: a vanished client is noticed within about 8 s and
#: its lock freed (5 s idle, then 3 probes 1 s apart; 5 s for unacknowledged data).
SERVER_SETTINGS = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "1",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "5000",
    "statement_timeout": "10s",
}
#: The holder's side gives up on an unanswered call sooner than the server gives up on it.
CLIENT_USER_TIMEOUT_MS = 2000


def advisory_key(namespace: str, job_id: str, worker_index: int) -> int:
    """The slot's advisory lock key (see the module docstring)."""
    name = f"process_balancer:{namespace}:{job_id}:{worker_index}"
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def lock_url(job_id: str, options: Mapping[str, Any], backend_url: str) -> str:
    """The URL of the database holding the job's advisory locks; ValueError if there is none."""
    url = options.get(URL_OPTION)
    if url is not None:
        if not isinstance(url, str) or registry.kind_of(url) is not registry.POSTGRESQL:
            raise ValueError(
                f"job {job_id!r}: option {URL_OPTION} must be a postgresql:// URL, got "
                f"{redact_url(str(url))!r}"
            )
        return url
    if registry.kind_of(backend_url) is registry.POSTGRESQL:
        return backend_url
    raise ValueError(
        f"job {job_id!r} uses lock_driver 'advisory_lock', which needs PostgreSQL, but the "
        f"backend is {redact_url(backend_url)!r}: set the job option {URL_OPTION} to a "
        "postgresql:// URL, or use a postgresql:// backend"
    )


def _target(url: str) -> PostgresURL:
    try:
        from ..backends.postgres.connections import parse_url
    except ImportError as exc:
        raise ValueError(
            f"lock_driver 'advisory_lock' needs psycopg 3 ({exc}): "
            "pip install 'process-balancer[postgres]'"
        ) from None
    return parse_url(url)


class AdvisoryLock(LockDriver):
    """``pg_try_advisory_lock`` on a dedicated connection, with a fencing counter per slot."""

    def __init__(self, context: LockContext) -> None:
        super().__init__(context)
        self.ttl = None  # held as long as the connection lives
        self._target = _target(lock_url(context.job_id, context.options, context.backend.url))
        self._key = advisory_key(context.namespace, context.job_id, context.worker_index)
        self._conn: psycopg.Connection[Any] | None = None
        self._held = False
        self._channel: str | None = None
        backend_url = context.backend.url
        if registry.kind_of(backend_url) is registry.POSTGRESQL:
            from ..backends.postgres.connections import channel_name, parse_url

            backend = parse_url(backend_url)
            # The release wakes waiting workers only where the group listens: same database.
            if (backend.conninfo, backend.schema) == (self._target.conninfo, self._target.schema):
                self._channel = channel_name(backend.schema, context.namespace)

    @property
    def renew_interval(self) -> float | None:
        return CHECK_INTERVAL

    @classmethod
    def check(cls, job_id: str, options: Mapping[str, Any], backend: Backend) -> None:
        """Fail at start-up, naming the job, when there is no lock database or it cannot be
        used; creates the fencing table there when missing."""
        try:
            target = _target(lock_url(job_id, options, backend.url))
        except ValueError as exc:
            message = str(exc)
            if not message.startswith("job "):
                message = f"job {job_id!r}: {message}"
            raise ValueError(message) from None
        from ..backends.postgres.connections import connect
        from ..backends.postgres.schema import ensure_schema

        try:
            conn = connect(target.conninfo, purpose="advisory lock check", display=target.display)
            with conn:
                ensure_schema(conn, target)
        except BackendError as exc:
            raise ValueError(f"job {job_id!r}: advisory lock database: {exc}") from None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            from ..backends.postgres.connections import connect

            self._conn = connect(
                self._target.conninfo,
                purpose=f"lock {self.context.name}",
                server_settings=SERVER_SETTINGS,
                client_settings={"tcp_user_timeout": CLIENT_USER_TIMEOUT_MS},
                display=self._target.display,
            )
        return self._conn

    def try_acquire(self) -> int | None:
        import psycopg

        conn = self._connection()
        schema = self._target.quoted_schema
        try:
            row = conn.execute(
                "WITH l AS (SELECT pg_try_advisory_lock(%(key)s) AS taken) "
                f"INSERT INTO {schema}.pb_advisory_fences AS f "
                "(namespace, job_id, worker_index, fence) "
                "SELECT %(ns)s, %(job)s, %(index)s, "
                "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint FROM l WHERE l.taken "
                "ON CONFLICT (namespace, job_id, worker_index) DO UPDATE SET fence = greatest("
                "f.fence + 1, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint) "
                "RETURNING f.fence",
                {
                    "key": self._key,
                    "ns": self.context.namespace,
                    "job": self.context.job_id,
                    "index": self.context.worker_index,
                },
            ).fetchone()
        except psycopg.Error as exc:
            # A session lock survives a failed statement: closing the connection frees it.
            self.close()
            raise BackendError(
                f"advisory lock {self.context.name} on {self._target.display}: "
                f"{' '.join(str(exc).split())}"
            ) from exc
        if row is None:
            # Held elsewhere: a waiting worker keeps no connection, only a holder does.
            self.close()
            return None
        self._held = True
        return int(row[0])

    def renew(self) -> bool:
        import psycopg

        conn = self._conn
        if conn is None or not self._held:
            return False
        try:
            conn.execute("SELECT 1")
        except psycopg.Error:
            self.close()
            return False
        return True

    def release(self) -> None:
        import psycopg

        conn, held = self._conn, self._held
        self._held = False
        if conn is None or not held:
            return
        try:
            if self._channel is not None:
                conn.execute(
                    "SELECT pg_advisory_unlock(%s), pg_notify(%s, %s)",
                    (self._key, self._channel, f"released {self.context.name}"),
                )
            else:
                conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
        except psycopg.Error:
            pass  # the connection is gone, and the lock with it; close() below tidies up
        finally:
            self.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._held = False
        if conn is not None:
            conn.close()

    def wait_hint(self) -> str | None:
        return f"released {self.context.name}" if self._channel is not None else None
