"""The ``process-balancer`` command: ``run`` a process, and steer a running group.

Each subcommand's module is imported only when that subcommand runs (or its help is shown),
so ``--version`` and ``--help`` start in a blink.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from .. import __version__

__all__ = ["main"]

#: subcommand -> "module:function" under this package, in the order ``--help`` lists them
COMMANDS = {
    "run": "run:run",
    "status": "status:status",
    "scale": "scale:scale",
    "pause": "scale:pause",
    "resume": "scale:resume",
    "quiet": "control:quiet",
    "stop": "control:stop",
    "dump": "control:dump",
    "web": "web:web",
    "migrate": "migrate:migrate",
    "repair": "repair:repair",
}

#: Each subcommand's first paragraph, for ``--help`` without importing every subcommand
#: (tests/integration/test_cli.py checks they match the docstrings).
SUMMARIES = {
    "run": "Run this process in the foreground until INT or TERM.",
    "status": (
        "Show the processes of the group, their slots, and every job's scheduled and running "
        "workers, unplaced and stuck slots."
    ),
    "scale": "Set JOB's worker count to N, or change it --by K, on every process at once.",
    "pause": "Stop every worker of JOB (count 0), remembering its count for `resume`.",
    "resume": "Give a paused JOB back the worker count it had before `pause`.",
    "quiet": "Make processes quiet: they keep heartbeating and hand every slot to peers.",
    "stop": (
        "Stop processes: they hand their slots to peers, wait up to shutdown_timeout for running "
        "iterations, leave the group and exit 0."
    ),
    "dump": "Make processes log the stack of every thread (like the TTIN signal).",
    "web": (
        "Serve a web dashboard of the group: processes, slots, jobs, throughput, errors, with "
        "buttons to scale, pause and resume jobs and to quiet and stop processes."
    ),
    "migrate": "Create or upgrade the tables of a PostgreSQL backend; safe to run again.",
    "repair": "Rebuild the group's membership, assignment and version from what can be read.",
}


class _LazyGroup(click.Group):
    """A click group whose subcommands are imported when first used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attribute = target.partition(":")
        module = importlib.import_module(f"{__package__}.{module_name}")
        command: click.Command = getattr(module, attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The list without importing every subcommand to read its docstring.
        with formatter.section("Commands"):
            formatter.write_dl(list(SUMMARIES.items()))


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="process-balancer")
def main(**_: Any) -> None:
    """Run long-running, iterative jobs balanced across processes and hosts.

    Start `process-balancer run` on every host: each process joins the group named by the
    config's namespace, and every job's worker slots are spread over the live processes.
    The other commands show and steer a running group from anywhere that reaches its backend.
    """
