"""Coordination backends: shared group state behind one interface."""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import (
    Acquired,
    Backend,
    BackendError,
    CorruptStateError,
    GroupSnapshot,
    HeartbeatResult,
    Inspection,
    MemberState,
    Problem,
    RepairReport,
    redact_url,
)

__all__ = [
    "Acquired",
    "Backend",
    "BackendError",
    "CorruptStateError",
    "GroupSnapshot",
    "HeartbeatResult",
    "Inspection",
    "MemberState",
    "Problem",
    "RepairReport",
    "open_backend",
    "redact_url",
]


def open_backend(url: str, namespace: str, *, create: bool = True) -> Backend:
    """The backend for ``url`` (``redis://``, ``rediss://``, ``unix://``, ``sqlite:///`` or
    ``postgresql://``; ``memory://NAME`` for a group inside this Python process).

    ``create=False`` is for commands that only read: a SQLite file that does not exist is
    then a BackendError, and neither it nor its directory is created.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        from .redis.backend import RedisBackend

        return RedisBackend(url, namespace)
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresBackend
        except ImportError as exc:
            raise ValueError(
                f"the PostgreSQL backend needs psycopg 3 ({exc}): "
                "pip install 'process-balancer[postgres]'"
            ) from None
        return PostgresBackend(url, namespace)
    if scheme == "sqlite":
        from .sqlite.backend import SQLiteBackend

        return SQLiteBackend(url, namespace, create=create)
    if scheme == "memory":
        from .memory import MemoryBackend

        return MemoryBackend(url, namespace)
    raise ValueError(
        f"unsupported backend URL {redact_url(url)!r}: use redis://, rediss://, unix://, "
        "sqlite:///, postgresql:// or memory://"
    )
