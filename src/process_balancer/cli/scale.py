"""``scale``, ``pause`` and ``resume``: a job's worker count at runtime."""

from __future__ import annotations

import difflib
import re

import click

from ..client.api import Client
from ..config.defaults import MAX_WORKERS_HARD_LIMIT
from .common import EXIT_FAILED, fail, with_client

FORCE_HELP = "Accept a job id that neither the config nor any live process knows."


def _check_known(client: Client, job_id: str, force: bool) -> None:
    if force:
        return
    known = client.known_jobs()
    if job_id in known:
        return
    close = difflib.get_close_matches(job_id, sorted(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    where = (
        f"not in {client.settings.config_file}"
        if client.settings.config_file is not None
        else "no config file read"
    )
    listed = ", ".join(sorted(known)) or "none"
    fail(
        f"unknown job {job_id!r} ({where}, and no live process runs it); {hint}"
        f"known jobs: {listed}; pass --force to set it anyway"
    )


def _ceiling(client: Client, job_id: str) -> str:
    """The job's ceiling, what it is and where to raise it, for messages."""
    settings = client.settings
    if job_id in settings.jobs:
        what, key = f"the max_workers of job {job_id!r}", f"jobs.{job_id}.max_workers"
    elif settings.config_file is not None:
        what, key = "the global max_workers", "max_workers"
    else:
        what, key = "the default max_workers", "max_workers"
    where = settings.config_file or "the config"
    return (
        f"{client.max_workers(job_id):,}, {what} (set {key} in {where} to allow more, up to "
        f"{MAX_WORKERS_HARD_LIMIT:,})"
    )


def _parse_count(raw: str, client: Client, job_id: str) -> int:
    if not re.fullmatch(r"-?[0-9]+", raw):
        if raw.startswith("-"):
            # Unknown options reach here: they are accepted as arguments so that N may be -1.
            fail(f"no such option: {raw}")
        fail(f"N must be a whole number of workers, got {raw!r}")
    if raw.startswith("-"):
        fail(f"N must be 0 or more, got {raw}; nothing was changed")
    # A number too long to be a count is refused as typed, without converting it.
    if len(raw) > len(str(MAX_WORKERS_HARD_LIMIT)) or int(raw) > client.max_workers(job_id):
        fail(f"N must be at most {_ceiling(client, job_id)}, got {raw}; nothing was changed")
    return int(raw)


def _check_change(by: int, client: Client, job_id: str) -> None:
    if abs(by) > client.max_workers(job_id):
        fail(
            f"K must be from -{client.max_workers(job_id):,} to {_ceiling(client, job_id)}, "
            f"got {by}; nothing was changed"
        )


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("job_id", metavar="JOB")
@click.argument("count", metavar="[N]", required=False)
@click.option("--by", type=int, metavar="K", help="Change the count by K (negative: fewer).")
@click.option("--force", is_flag=True, help=FORCE_HELP)
@with_client
def scale(client: Client, job_id: str, count: str | None, by: int | None, force: bool) -> None:
    """Set JOB's worker count to N, or change it --by K, on every process at once.

    \b
    Examples:
      process-balancer scale process_queue 8
      process-balancer scale process_queue --by -2
    """
    if (count is None) == (by is None):
        fail("give either the new count N or --by K, not both and not neither")
    to = _parse_count(count, client, job_id) if count is not None else None
    if by is not None:
        _check_change(by, client, job_id)
    _check_known(client, job_id, force)
    before = client.scheduled_workers(job_id)
    try:
        after = client.adjust_scheduled_workers(job_id, to=to, by=by)
    except ValueError as exc:
        fail(str(exc))
    click.echo(f"{job_id}: {after} workers (was {before})")


@click.command()
@click.argument("job_id", metavar="JOB")
@click.option("--force", is_flag=True, help=FORCE_HELP)
@with_client
def pause(client: Client, job_id: str, force: bool) -> None:
    """Stop every worker of JOB (count 0), remembering its count for `resume`."""
    _check_known(client, job_id, force)
    try:
        remembered = client.pause(job_id)
    except ValueError as exc:  # paused already, or a count above the ceiling: the group's state
        fail(str(exc), EXIT_FAILED)
    click.echo(f"{job_id}: paused, 0 workers (resume restores {remembered})")


@click.command()
@click.argument("job_id", metavar="JOB")
@with_client
def resume(client: Client, job_id: str) -> None:
    """Give a paused JOB back the worker count it had before `pause`."""
    try:
        count = client.resume(job_id)
    except ValueError as exc:  # not paused, or a count above the ceiling: the group's state
        fail(str(exc), EXIT_FAILED)
    click.echo(f"{job_id}: resumed, {count} workers")
