"""``process-balancer repair``: rebuild a group's derived state after its data was damaged."""

from __future__ import annotations

from collections.abc import Mapping

import click

from ..client.api import Client
from .common import with_client


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{job}={count}" for job, count in sorted(counts.items())) or "none"


@click.command()
@click.option("--yes", is_flag=True, help="Make the changes; without it nothing is written.")
@with_client
def repair(client: Client, yes: bool) -> None:
    """Rebuild the group's membership, assignment and version from what can be read.

    For data the backend holds that this version cannot read (a key of the wrong type, a
    version that is not a number, garbage in a member's traits): unreadable members are
    dropped (live processes re-add themselves at their next heartbeat), the assignment is
    cleared and the version moved past every earlier one, so every process recomputes. Every
    readable worker count and pause is kept; unreadable ones are removed. Worker locks and
    fencing counters are never touched.

    Without --yes, prints what it would do and changes nothing.
    """
    backend = client.backend
    problems = backend.inspect().problems
    group = f"namespace {client.settings.namespace} on {backend.display_url}"
    if problems:
        click.echo(f"{group}: {len(problems)} unreadable value(s):")
        for problem in problems:
            click.echo(f"  {problem.where} {problem.detail}")
    else:
        click.echo(f"{group}: no unreadable data found")
    report = backend.repair(apply=yes)
    click.echo("repaired:" if report.applied else "repair --yes would do this:")
    for action in report.actions:
        click.echo(f"  {action}")
    click.echo(f"kept worker counts: {_counts(report.counts)}")
    click.echo(f"kept pauses (count each resumes to): {_counts(report.paused)}")
    if report.applied:
        click.echo("every live process recomputes its slots at its next heartbeat")
    else:
        click.echo("nothing was changed; run `process-balancer repair --yes` to apply")
