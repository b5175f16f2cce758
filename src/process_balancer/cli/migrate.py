"""``process-balancer migrate``: create or upgrade a PostgreSQL backend's tables ahead of time."""

from __future__ import annotations

import click

from ..backends import BackendError, redact_url, registry
from .common import EXIT_FAILED, fail, group_options, load_settings


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
    shown = redact_url(settings.backend)
    try:
        kind = registry.kind_for(settings.backend)
        result = kind.load().migrate(settings.backend)
    except ValueError as exc:
        fail(str(exc))
    except BackendError as exc:
        fail(" ".join(str(exc).split()), EXIT_FAILED)
    if result is None:
        click.echo(f"{shown}: a {kind.name} backend has no tables to migrate; nothing to do")
        return
    where = f"schema {result.schema!r} of database {result.database!r}"
    if result.outcome == "created":
        click.echo(f"{where}: created the process-balancer tables (version {result.version})")
    elif result.outcome == "upgraded":
        click.echo(
            f"{where}: upgraded the process-balancer tables from version "
            f"{result.previous_version} to {result.version}"
        )
    else:
        click.echo(f"{where}: the tables are up to date (version {result.version}); nothing to do")
