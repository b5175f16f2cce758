"""``process-balancer status``: the group at a glance, once or refreshed in place."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from ..backends import BackendError
from ..client.api import Client
from ..client.status import DEFAULT_STUCK_AFTER
from .common import EXIT_FAILED, fail, with_reading_client
from .status_table import render

#: Width of the table when stdout is not a terminal (piped to a file, less, grep).
PIPE_WIDTH = 200


def _console() -> Console:
    console = Console()
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(width=PIPE_WIDTH)
    return console


def _print_json(status: dict[str, Any]) -> None:
    click.echo(json.dumps(status, sort_keys=False))
    sys.stdout.flush()


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON (schema 1).")
@click.option(
    "--watch",
    type=click.FloatRange(min=0.1),
    is_flag=False,
    flag_value=2.0,
    default=None,
    metavar="[SECONDS]",
    help="Refresh every SECONDS (default 2) until Ctrl-C; with --json, one document per line.",
)
@click.option(
    "--stuck-after",
    type=click.FloatRange(min=0),
    default=DEFAULT_STUCK_AFTER,
    show_default=True,
    metavar="SECONDS",
    help="Report a slot as stuck once its current iteration has run this long.",
)
@with_reading_client
def status(client: Client, as_json: bool, watch: float | None, stuck_after: float) -> None:
    """Show the processes of the group, their slots, and every job's scheduled and running
    workers, unplaced and stuck slots.

    Data the backend holds that cannot be read is listed with where it is and what fixes it,
    under everything that could be read; the exit status is then 1."""
    document = client.status(stuck_after=stuck_after)
    if watch is None:
        if as_json:
            _print_json(document)
        else:
            _console().print(render(document))
        problems = document["problems"]
        if problems:
            places = ", ".join(p["where"] for p in problems)
            fixes = "; ".join(dict.fromkeys(p["fix"] for p in problems))
            fail(
                f"the backend holds data this version cannot read, in {places}; {fixes}",
                EXIT_FAILED,
            )
        return
    try:
        if as_json:
            _watch_json(client, document, watch, stuck_after)
        else:
            _watch_table(client, document, watch, stuck_after)
    except KeyboardInterrupt:
        pass


def _watch_json(client: Client, document: dict[str, Any], every: float, stuck: float) -> None:
    while True:
        _print_json(document)
        time.sleep(every)
        try:
            document = client.status(stuck_after=stuck)
        except BackendError as exc:
            click.echo(f"process-balancer: cannot reach the backend: {exc}; retrying", err=True)


def _watch_table(client: Client, document: dict[str, Any], every: float, stuck: float) -> None:
    view = render(document)
    with Live(view, console=_console(), auto_refresh=False, transient=False) as live:
        while True:
            time.sleep(every)
            try:
                view = render(client.status(stuck_after=stuck))
                live.update(view, refresh=True)
            except BackendError as exc:
                warning = Text(f"cannot reach the backend ({exc}); retrying", style="bold red")
                live.update(Group(view, warning), refresh=True)
