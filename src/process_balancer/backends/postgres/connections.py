"""Connections to PostgreSQL: URL handling, connection settings and a small per-purpose pool.

A process-balancer process talks to its backend from several threads (heartbeat, lock
renewals, every worker taking its lock, reconciliation snapshots) and each call is one short
round trip, so they take turns on one connection (:class:`ConnectionPool` of size 1), the
heartbeat and renewals first. The listener and each held advisory lock have a connection of
their own. That makes at most 2 connections per process plus 1 per held advisory lock, so a
default server (``max_connections = 100``) has room for 40 processes and other clients.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlsplit, urlunsplit

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from ..base import BackendError, redact_url
from ..registry import POSTGRESQL

#: URL schemes of the PostgreSQL backend.
SCHEMES = POSTGRESQL.schemes
#: Schema holding the tables when the URL has no ``?schema=``.
DEFAULT_SCHEMA = "process_balancer"

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

#: libpq settings every connection gets unless the URL sets them: a dead server (or network)
#: is noticed within seconds instead of minutes, so calls fail instead of hanging.
CLIENT_SETTINGS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 1,
    "keepalives_count": 3,
    "tcp_user_timeout": 5000,  # milliseconds unacknowledged data may wait before giving up
}
#: Seconds one backend call may run on the server before it is cancelled. Calls take turns on
#: one connection, so this also bounds how long a stalled call (waiting for a row lock, say)
#: holds up the heartbeat queued behind it: with the default heartbeat interval (1 s) and
#: process expiry (3 s), a heartbeat delayed by one stalled call still lands in time. A URL
#: may set its own (``?options=-c%20statement_timeout%3D500``): keep it below the process
#: expiry minus the heartbeat interval.
CALL_TIMEOUT = 1.0
#: Server settings of backend connections: no call may hang on a row lock for long.
BACKEND_SERVER_SETTINGS: dict[str, str] = {"statement_timeout": f"{int(CALL_TIMEOUT * 1000)}ms"}


@dataclass(frozen=True)
class PostgresURL:
    """A ``postgresql://`` URL split into what libpq gets and the schema of the tables."""

    url: str  # as given, with ``?schema=``
    conninfo: str  # without ``?schema=``, for libpq
    schema: str

    @property
    def display(self) -> str:
        return redact_url(self.url)

    @property
    def quoted_schema(self) -> str:
        return quote_ident(self.schema)


def parse_url(url: str) -> PostgresURL:
    """Split ``?schema=NAME`` (default ``process_balancer``) off a PostgreSQL URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError(f"not a PostgreSQL URL: {redact_url(url)!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    schema = schemas[-1] if schemas else DEFAULT_SCHEMA
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(
            f"invalid schema {schema!r} in backend URL {redact_url(url)!r}: use letters, "
            "digits and '_', starting with a letter or '_', at most 63 characters"
        )
    # The other parameters reach libpq as written: decoding and encoding them again would
    # turn ``options=-c%20x%3D1`` into ``-c+x=1``, which libpq does not read as a space.
    rest = "&".join(
        piece
        for piece in parts.query.split("&")
        if piece and unquote_plus(piece.split("=", 1)[0]) != "schema"
    )
    conninfo = urlunsplit(parts._replace(query=rest))
    return PostgresURL(url=url, conninfo=conninfo, schema=schema)


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def channel_name(schema: str, namespace: str) -> str:
    """The LISTEN/NOTIFY channel of one group; hashed when too long for an identifier."""
    name = f"pb:{schema}:{namespace}"
    if len(name.encode()) <= 63:
        return name
    return "pb:" + hashlib.sha256(name.encode()).hexdigest()[:40]


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def connect(
    conninfo: str,
    *,
    purpose: str,
    server_settings: Mapping[str, str] | None = None,
    client_settings: Mapping[str, Any] | None = None,
    display: str | None = None,
) -> psycopg.Connection[Any]:
    """An autocommit connection with :data:`CLIENT_SETTINGS` (``client_settings`` over them)
    and ``server_settings`` where the URL does not set its own; a failure is a BackendError
    that says what to check."""
    given = conninfo_to_dict(conninfo)
    wanted = {**CLIENT_SETTINGS, **(client_settings or {})}
    extra: dict[str, Any] = {k: v for k, v in wanted.items() if k not in given}
    # The pid first, where a long namespace cannot truncate it away (63 bytes at most):
    # pg_stat_activity then tells which process holds which connection.
    extra.setdefault("application_name", f"process_balancer[{os.getpid()}] {purpose}")
    if server_settings:
        flags = " ".join(f"-c {key}={value}" for key, value in server_settings.items())
        # The URL's own options come last: of two -c flags for one setting, the last wins.
        extra["options"] = f"{flags} {given['options']}" if given.get("options") else flags
    try:
        return psycopg.connect(conninfo, autocommit=True, **extra)
    except psycopg.Error as exc:
        where = display or redact_url(conninfo)
        raise BackendError(
            f"cannot connect to PostgreSQL at {where}: {one_line(exc)}; check the host, port, "
            "database name and credentials in the URL, and that the server is running"
        ) from exc


class ConnectionPool:
    """At most ``size`` connections, each lent to one thread at a time; urgent callers
    (heartbeats, lock renewals) are served before the others waiting.

    A connection that broke, or that was given back inside a transaction, is closed instead
    of being lent again; the next call opens a new one.
    """

    def __init__(
        self, conninfo: str, *, size: int, purpose: str, display: str, wait: float = 10.0
    ) -> None:
        self._conninfo = conninfo
        self._size = size
        self._purpose = purpose
        self._display = display
        self._wait = wait
        self._idle: list[psycopg.Connection[Any]] = []
        self._open = 0
        self._closed = False
        self._mutex = threading.Lock()
        # One queue per priority, so a free connection wakes exactly one waiter.
        self._urgent = threading.Condition(self._mutex)
        self._normal = threading.Condition(self._mutex)
        self._waiting = {True: 0, False: 0}

    @contextmanager
    def connection(self, *, urgent: bool = False) -> Iterator[psycopg.Connection[Any]]:
        conn = self._take(urgent)
        try:
            yield conn
        finally:
            self._give_back(conn)

    def _available(self) -> bool:
        return bool(self._idle) or self._open < self._size

    def _wake_next(self) -> None:
        """Wake the first waiter in line if a connection is free (call holding the mutex)."""
        if not self._available():
            return
        if self._waiting[True]:
            self._urgent.notify()
        elif self._waiting[False]:
            self._normal.notify()

    def _take(self, urgent: bool) -> psycopg.Connection[Any]:
        deadline = time.monotonic() + self._wait
        queue = self._urgent if urgent else self._normal
        with self._mutex:
            self._waiting[urgent] += 1
            try:
                while True:
                    if self._closed:
                        raise BackendError(f"the connections to {self._display} are closed")
                    if urgent or not self._waiting[True]:
                        if self._idle:
                            return self._idle.pop()
                        if self._open < self._size:
                            self._open += 1
                            break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise BackendError(
                            f"all {self._size} connection(s) to {self._display} stayed busy "
                            f"for {self._wait:g}s"
                        )
                    queue.wait(left)
            finally:
                self._waiting[urgent] -= 1
                # Pass on what this caller leaves: a wake-up it took, a second free connection.
                self._wake_next()
        try:
            return connect(
                self._conninfo,
                purpose=self._purpose,
                server_settings=BACKEND_SERVER_SETTINGS,
                display=self._display,
            )
        except BaseException:
            with self._mutex:
                self._open -= 1
                self._wake_next()
            raise

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        reusable = (
            not conn.closed
            and not conn.broken
            and conn.info.transaction_status == pq.TransactionStatus.IDLE
        )
        with self._mutex:
            kept = reusable and not self._closed
            if kept:
                self._idle.append(conn)
            else:
                self._open -= 1
            self._wake_next()
        if not kept:
            conn.close()

    def close(self) -> None:
        with self._mutex:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._urgent.notify_all()
            self._normal.notify_all()
        for conn in idle:
            conn.close()
