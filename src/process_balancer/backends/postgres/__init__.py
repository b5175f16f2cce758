"""PostgreSQL coordination backend (``postgresql://`` or ``postgres://`` URLs).

The tables live in one schema (URL parameter ``?schema=NAME``, default ``process_balancer``),
created by ``process-balancer migrate`` or on first use; several groups share them, each row
carrying its namespace. See docs/design.md, "PostgreSQL backend".
"""

from __future__ import annotations

from ..base import MigrateResult
from .backend import PostgresBackend
from .connections import DEFAULT_SCHEMA, SCHEMES, PostgresURL, channel_name, parse_url
from .schema import SCHEMA_VERSION, migrate

__all__ = [
    "DEFAULT_SCHEMA",
    "SCHEMA_VERSION",
    "SCHEMES",
    "MigrateResult",
    "PostgresBackend",
    "PostgresURL",
    "channel_name",
    "migrate",
    "parse_url",
]
