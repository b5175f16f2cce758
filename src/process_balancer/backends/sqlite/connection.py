"""The SQLite file behind :class:`~process_balancer.backends.sqlite.SQLiteBackend`.

One connection per backend object, guarded by a lock (operations take well under a
millisecond, so threads of one process queue for it rather than each holding a connection of
their own). Every writing operation is one transaction opened with ``BEGIN IMMEDIATE``: it
takes the file's write lock before it reads anything, so a read-modify-write (a heartbeat, a
compare-and-set of the assignment, a lock takeover) is atomic across every process on the
host. Read-only operations use a plain ``BEGIN``: in WAL mode that is a consistent snapshot
which never waits for, nor holds up, a writer.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..base import BackendError
from ..codec import integer

#: Seconds a transaction waits for another process's write to finish before it fails.
BUSY_TIMEOUT = 5.0
#: Rows of the events table kept (over all namespaces); listeners read far fewer per poll.
EVENTS_KEPT = 1000

_SCHEMA = (resources.files(__package__) / "schema.sql").read_text()


def sqlite_path(url: str) -> Path:
    """The file a ``sqlite:///relative/path`` or ``sqlite:////absolute/path`` URL names.

    A relative path is relative to the working directory. Raises ValueError for a URL with a
    host (SQLite is a local file) or without a path.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise ValueError(f"not a sqlite:// URL: {url!r}")
    if parts.netloc:
        raise ValueError(
            f"a sqlite:// URL names a local file and has no host: write sqlite:///relative/path "
            f"or sqlite:////absolute/path, got {url!r}"
        )
    path = unquote(parts.path)
    if path.startswith("/"):
        path = path[1:]
    if not path or path.endswith("/"):
        raise ValueError(
            f"a sqlite:// URL needs a file path, such as sqlite:///process_balancer.sqlite3, "
            f"got {url!r}"
        )
    if path == ":memory:":
        raise ValueError(
            "sqlite:///:memory: is private to one connection; name a file so that every "
            "process of the group shares it"
        )
    return Path(path)


def missing_file(path: Path) -> str:
    """What to say when a command that only reads finds no SQLite file."""
    return (
        f"the SQLite file {path.resolve()} does not exist, so no process of this group has "
        "run yet; check the backend URL (sqlite:///relative/path or sqlite:////absolute/path) "
        "or start `process-balancer run`, which creates it"
    )


def connect(path: Path, *, create: bool = True) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode with the schema in place (created if missing).

    With ``create=False`` a missing file (or directory) is a BackendError and nothing is
    created: commands that only read must not leave a stray file behind a mistyped URL.
    """
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        target, uri = str(path), False
    elif not path.exists():
        raise BackendError(missing_file(path))
    else:
        # mode=rw opens an existing file only, so a file removed meanwhile is not re-created.
        target, uri = f"{path.resolve().as_uri().replace('file://', 'file:', 1)}?mode=rw", True
    conn = sqlite3.connect(
        target, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False, uri=uri
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        # WAL: readers never block writers. synchronous=NORMAL skips the fsync per commit; a
        # power loss can only drop the last commits, and it stops every process of the host
        # (SQLite groups are single-host) along with them.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\nCOMMIT;")
        _add_missing_columns(conn)
    except BaseException:
        conn.close()
        raise
    return conn


#: Columns added to tables after their first release: (table, column, declaration).
_ADDED_COLUMNS = (("pb_locks", "incarnation", "TEXT"), ("pb_groups", "partitions", "TEXT"))


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a file written by an earlier version up to date (one writer at a time)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, column, declaration in _ADDED_COLUMNS:
            present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def emit(conn: sqlite3.Connection, namespace: str, message: str) -> None:
    """Record a wake-up for listeners, inside the caller's write transaction."""
    cursor = conn.execute(
        "INSERT INTO pb_events (namespace, message) VALUES (?, ?)", (namespace, message)
    )
    seq = cursor.lastrowid or 0
    if seq > EVENTS_KEPT:
        conn.execute("DELETE FROM pb_events WHERE seq <= ?", (seq - EVENTS_KEPT,))


class Database:
    """A lazily opened, lock-protected connection to one SQLite file."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self.create = create
        self._mutex = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    def describe(self) -> str:
        return f"SQLite file {self.path.resolve()}"

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Turn SQLite failures (a locked or unwritable file, say) into BackendError."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise BackendError(f"{self.describe()}: {exc}") from exc

    @contextlib.contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction: ``BEGIN IMMEDIATE`` to write, a snapshot ``BEGIN`` to only read.

        Committed when the block ends, rolled back if it raises.
        """
        with self._mutex, self.errors():
            if self._closed:
                raise BackendError(f"{self.describe()}: the backend was closed")
            if self._conn is None:
                self._conn = connect(self.path, create=self.create)
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._mutex:
            self._closed = True
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None


def seconds(raw: object) -> float | None:
    """A stored time as a float, or None when the column holds something else."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    return None


class Scope:
    """One namespace's rows in one file, and the helpers every group of operations shares."""

    def __init__(self, db: Database, namespace: str) -> None:
        self.db = db
        self.namespace = namespace

    def where(self, table: str, key: str) -> str:
        """Where a value was found, for error messages."""
        return f"{self.db.describe()}, table {table}, {key}"

    def group_where(self, column: str) -> str:
        """Where a column of the group's ``pb_groups`` row is, for error messages."""
        return f"{self.where('pb_groups', f'namespace {self.namespace!r}')}, {column}"

    def versions(self, conn: sqlite3.Connection) -> tuple[int, int]:
        """(state version, version the stored assignment was computed from)."""
        row = conn.execute(
            "SELECT version, assignment_version FROM pb_groups WHERE namespace = ?",
            (self.namespace,),
        ).fetchone()
        if row is None:
            return 0, 0
        where = self.where("pb_groups", f"namespace {self.namespace!r}")
        return integer(row[0], f"{where}, version"), integer(row[1], f"{where}, assignment_version")

    def bump(self, conn: sqlite3.Connection) -> int:
        """Increment the state version and tell listeners; returns the new version."""
        version = self.versions(conn)[0] + 1
        conn.execute(
            "INSERT INTO pb_groups (namespace, version) VALUES (?, ?) "
            "ON CONFLICT (namespace) DO UPDATE SET version = excluded.version",
            (self.namespace, version),
        )
        emit(conn, self.namespace, "state")
        return version

    def incarnation(self, conn: sqlite3.Connection) -> tuple[str, float] | None:
        """The group's incarnation id and the time it grants locks from, if it has one."""
        row = conn.execute(
            "SELECT id, grants_at FROM pb_incarnations WHERE namespace = ?", (self.namespace,)
        ).fetchone()
        if row is None:
            return None
        grants_at = seconds(row[1])
        return str(row[0]), 0.0 if grants_at is None else grants_at

    def new_incarnation(self, conn: sqlite3.Connection, now: float, grants_at: float) -> str:
        """Begin a new incarnation granting locks from ``grants_at``; returns its id."""
        incarnation = f"sqlite.{int(now * 1_000_000)}.{secrets.token_hex(2)}"
        conn.execute(
            "INSERT INTO pb_incarnations (namespace, id, grants_at) VALUES (?, ?, ?) "
            "ON CONFLICT (namespace) DO UPDATE SET id = excluded.id, "
            "grants_at = excluded.grants_at",
            (self.namespace, incarnation, grants_at),
        )
        return incarnation

    def departed(self, conn: sqlite3.Connection, identity: str) -> float | None:
        """The deadline of ``identity`` if it was pruned in the last hour."""
        row = conn.execute(
            "SELECT deadline FROM pb_departed WHERE namespace = ? AND identity = ?",
            (self.namespace, identity),
        ).fetchone()
        return None if row is None else seconds(row[0])

    def deadline(self, conn: sqlite3.Connection, identity: str) -> float | None:
        """The membership deadline of ``identity``, None if it is not (readably) a member."""
        row = conn.execute(
            "SELECT deadline FROM pb_members WHERE namespace = ? AND identity = ?",
            (self.namespace, identity),
        ).fetchone()
        return None if row is None else seconds(row[0])
