"""``scale``, ``pause`` and ``resume``: a job's worker count at runtime."""

from __future__ import annotations

import difflib

import click

from ..api import Client, PauseError
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


def _parse_count(raw: str) -> int:
    try:
        count = int(raw)
    except ValueError:
        if raw.startswith("-"):
            # Unknown options reach here: they are accepted as arguments so that N may be -1.
            fail(f"no such option: {raw}")
        fail(f"N must be a whole number of workers, got {raw!r}")
    if count < 0:
        fail(f"N must be 0 or more, got {count}; nothing was changed")
    return count


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
    to = _parse_count(count) if count is not None else None
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
    except PauseError as exc:
        fail(str(exc), EXIT_FAILED)
    click.echo(f"{job_id}: paused, 0 workers (resume restores {remembered})")


@click.command()
@click.argument("job_id", metavar="JOB")
@with_client
def resume(client: Client, job_id: str) -> None:
    """Give a paused JOB back the worker count it had before `pause`."""
    try:
        count = client.resume(job_id)
    except PauseError as exc:
        fail(str(exc), EXIT_FAILED)
    click.echo(f"{job_id}: resumed, {count} workers")
