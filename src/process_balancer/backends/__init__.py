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
    MemberState,
    redact_url,
)

__all__ = [
    "Acquired",
    "Backend",
    "BackendError",
    "CorruptStateError",
    "GroupSnapshot",
    "HeartbeatResult",
    "MemberState",
    "open_backend",
    "redact_url",
]


def open_backend(url: str, namespace: str) -> Backend:
    """The backend for ``url`` (``redis://``, ``rediss://`` or ``unix://``)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisBackend

        return RedisBackend(url, namespace)
    raise ValueError(
        f"unsupported backend URL {redact_url(url)!r}: use redis://, rediss:// or unix://"
    )
