"""Coordination backends: shared group state behind one interface."""

from __future__ import annotations

from . import registry
from .base import (
    Acquired,
    Backend,
    BackendError,
    CorruptStateError,
    Gate,
    GroupSnapshot,
    HeartbeatResult,
    Inspection,
    MemberState,
    MigrateResult,
    Partition,
    Problem,
    RepairReport,
    redact_url,
)

__all__ = [
    "Acquired",
    "Backend",
    "BackendError",
    "CorruptStateError",
    "Gate",
    "GroupSnapshot",
    "HeartbeatResult",
    "Inspection",
    "MemberState",
    "MigrateResult",
    "Partition",
    "Problem",
    "RepairReport",
    "open_backend",
    "redact_url",
]


def open_backend(url: str, namespace: str, *, create: bool = True) -> Backend:
    """The backend for ``url``: ``redis://``, ``rediss://``, ``unix://``, ``sqlite:///``,
    ``postgresql://`` or ``memory://NAME`` (a group inside this Python process), as the
    registry maps them (``backends/registry.py``); ValueError for any other URL.

    ``create=False`` is for commands that only read: a SQLite file that does not exist is
    then a BackendError, and neither it nor its directory is created.
    """
    return registry.kind_for(url).load().open(url, namespace, create=create)
