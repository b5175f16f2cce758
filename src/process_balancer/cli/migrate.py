"""``process-balancer migrate``: create or upgrade a PostgreSQL backend's tables ahead of time."""

from __future__ import annotations

from urllib.parse import urlsplit

import click

from ..backends import BackendError, redact_url
from .common import EXIT_FAILED, fail, group_options, load_settings

_POSTGRES_SCHEMES = ("postgresql", "postgres")


@click.command()
@group_options
def migrate(
    config_file: str | None,
    environment: str | None,
    backend_url: str | None,
    namespace: str | None,
) -> None:
    """Create or upgrade the tables of a PostgreSQL backend; safe to run again.

    The tables go in the schema named by the URL's `?schema=` (default process_balancer), in
    one transaction: after an error nothing is left half-created. Every namespace shares them.
    A process also creates them on its first run; run this ahead of time when the runners'
    role may not create tables.

    \b
    Examples:
      process-balancer migrate -c process_balancer.yml
      process-balancer migrate --backend 'postgresql://admin@db/app?schema=jobs'
    """
    settings = load_settings(config_file, environment, backend_url, namespace)
    scheme = urlsplit(settings.backend).scheme.lower()
    shown = redact_url(settings.backend)
    if scheme not in _POSTGRES_SCHEMES:
        click.echo(f"{shown}: a {scheme}:// backend has no tables to migrate; nothing to do")
        return
    try:
        from ..backends.postgres import SCHEMA_VERSION, parse_url
        from ..backends.postgres import migrate as migrate_tables
    except ImportError:
        fail("the PostgreSQL backend needs psycopg 3: pip install 'process-balancer[postgres]'")
    try:
        target = parse_url(settings.backend)
        result = migrate_tables(target)
    except ValueError as exc:
        fail(str(exc))
    except BackendError as exc:
        fail(" ".join(str(exc).split()), EXIT_FAILED)
    where = f"schema {result.schema!r} of database {result.database!r}"
    if result.outcome == "created":
        click.echo(f"{where}: created the process-balancer tables (version {SCHEMA_VERSION})")
    elif result.outcome == "upgraded":
        click.echo(
            f"{where}: upgraded the process-balancer tables from version "
            f"{result.previous_version} to {SCHEMA_VERSION}"
        )
    else:
        click.echo(f"{where}: the tables are up to date (version {SCHEMA_VERSION}); nothing to do")
