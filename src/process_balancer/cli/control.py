"""``quiet``, ``stop`` and ``dump``: remote commands to processes on any host, acknowledged."""

from __future__ import annotations

import click

from ..client.api import Client
from .common import EXIT_FAILED, fail, with_reading_client

_HELP = {
    "quiet": "Make processes quiet: they keep heartbeating and hand every slot to peers.",
    "stop": "Stop processes: they hand their slots to peers, wait up to shutdown_timeout for "
    "running iterations, leave the group and exit 0.",
    "dump": "Make processes log the stack of every thread (like the TTIN signal).",
}


def _targets(
    client: Client, identities: tuple[str, ...], all_: bool, hosts: tuple[str, ...]
) -> tuple[list[str], list[str]]:
    """Identities to send to, in order, and a problem line for each selector matching none."""
    if not (identities or all_ or hosts):
        fail("name at least one IDENTITY, or use --all or --host HOST")
    live = [(m.identity, m.traits.get("hostname")) for m in client.processes()]
    targets: list[str] = []
    problems: list[str] = []
    if all_:
        targets.extend(identity for identity, _ in live)
        if not live:
            problems.append(f"no live process in namespace {client.settings.namespace!r}")
    for host in hosts:
        on_host = [identity for identity, hostname in live if hostname == host]
        if not on_host:
            problems.append(f"no live process on host {host!r}")
        targets.extend(on_host)
    targets.extend(identities)
    return list(dict.fromkeys(targets)), problems


def _make(name: str) -> click.Command:
    @click.command(name=name, help=f"{_HELP[name]}\n\nExits 1 unless every target acknowledges.")
    @click.argument("identities", nargs=-1, metavar="[IDENTITY]...")
    @click.option("--all", "all_", is_flag=True, help="Every live process of the group.")
    @click.option(
        "--host",
        "hosts",
        multiple=True,
        metavar="HOST",
        help="Every live process on HOST (its hostname as `status` shows it). Repeatable.",
    )
    @click.option(
        "--wait",
        type=click.FloatRange(min=0),
        default=5.0,
        show_default=True,
        metavar="SECONDS",
        help="How long to wait for the acknowledgements.",
    )
    @with_reading_client
    def command(
        client: Client,
        identities: tuple[str, ...],
        all_: bool,
        hosts: tuple[str, ...],
        wait: float,
    ) -> None:
        targets, problems = _targets(client, identities, all_, hosts)
        for problem in problems:
            click.echo(f"{problem}", err=True)
        results = client.send_commands(targets, name, wait=wait) if targets else []
        width = max((len(r.identity) for r in results), default=0)
        for result in results:
            if result.outcome == "acknowledged":
                text = f"acknowledged in {result.after:.2f}s"
            elif result.outcome == "not_acknowledged":
                text = f"not acknowledged within {wait:g}s"
            else:
                text = "not a live process"
            click.echo(f"{result.identity:<{width}}  {text}")
        if problems or any(r.outcome != "acknowledged" for r in results):
            raise SystemExit(EXIT_FAILED)

    return command


quiet = _make("quiet")
stop = _make("stop")
dump = _make("dump")
