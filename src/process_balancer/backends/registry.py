"""Which backend serves which URL: one entry per backend package, looked up by URL scheme.

Adding a backend is one package under ``backends/`` plus one entry in :data:`KINDS`. Config
validation, ``open_backend``, ``migrate`` and the lock drivers ask this registry (and the
backend class it loads) instead of keeping lists of schemes of their own. Entries name their
module as a string, so looking a URL up imports no client library.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .base import redact_url

if TYPE_CHECKING:
    from .base import Backend


def _check_redis(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme.lower() == "unix" and not parts.path:
        raise ValueError(f"a unix:// backend URL needs a socket path, got {redact_url(url)!r}")


def _check_sqlite(url: str) -> None:
    from .sqlite.connection import sqlite_path

    sqlite_path(url)


@dataclass(frozen=True)
class BackendKind:
    """One backend: its URL schemes and where its class lives."""

    name: str
    schemes: tuple[str, ...]
    module: str  # relative to this package
    class_name: str
    #: what to install when the module cannot be imported (its client library is missing)
    install: str | None = None
    #: extra checks of a URL of this kind, raising ValueError naming what is wrong
    check: Callable[[str], None] | None = None

    def load(self) -> type[Backend]:
        """The backend class; ValueError naming the package to install if it cannot load."""
        try:
            module = importlib.import_module(f"{__package__}.{self.module}")
        except ImportError as exc:
            if self.install is None:
                raise
            raise ValueError(f"the {self.name} backend needs {self.install} ({exc})") from None
        backend_class: type[Backend] = getattr(module, self.class_name)
        return backend_class

    def check_url(self, url: str) -> None:
        try:
            urlsplit(url).port  # noqa: B018 - parsing the port is the check
        except ValueError:
            raise ValueError(f"invalid port in backend URL {redact_url(url)!r}") from None
        if self.check is not None:
            self.check(url)


REDIS = BackendKind(
    "Redis", ("redis", "rediss", "unix"), "redis", "RedisBackend", check=_check_redis
)
POSTGRESQL = BackendKind(
    "PostgreSQL",
    ("postgresql", "postgres"),
    "postgres",
    "PostgresBackend",
    install="psycopg 3: pip install 'process-balancer[postgres]'",
)
SQLITE = BackendKind("SQLite", ("sqlite",), "sqlite", "SQLiteBackend", check=_check_sqlite)
MEMORY = BackendKind("in-memory", ("memory",), "memory", "MemoryBackend")

#: Every backend, in the order error messages list them.
KINDS: tuple[BackendKind, ...] = (REDIS, SQLITE, POSTGRESQL, MEMORY)

_BY_SCHEME = {scheme: kind for kind in KINDS for scheme in kind.schemes}


def schemes() -> list[str]:
    """Every accepted URL scheme, as ``scheme://``, in the registry's order."""
    return [f"{scheme}://" for kind in KINDS for scheme in kind.schemes]


def kind_of(url: str) -> BackendKind | None:
    """The backend serving ``url``, or None if no backend does."""
    return _BY_SCHEME.get(urlsplit(url).scheme.lower())


def kind_for(url: str) -> BackendKind:
    """The backend serving ``url``; ValueError listing the accepted schemes if none does."""
    kind = kind_of(url)
    if kind is None:
        raise ValueError(
            f"unsupported backend URL {redact_url(url)!r}: the scheme must be one of "
            f"{', '.join(schemes())}"
        )
    return kind


def check_url(url: str) -> BackendKind:
    """The backend serving ``url`` after checking the URL; ValueError naming what is wrong."""
    kind = kind_for(url)
    kind.check_url(url)
    return kind
