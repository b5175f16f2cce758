"""The ``process-balancer`` command: ``run`` a process, and steer a running group."""

from __future__ import annotations

import click

from .. import __version__
from .control import dump, quiet, stop
from .migrate import migrate
from .repair import repair
from .run import run
from .scale import pause, resume, scale
from .status import status
from .web import web

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="process-balancer")
def main() -> None:
    """Run long-running, iterative jobs balanced across processes and hosts.

    Start `process-balancer run` on every host: each process joins the group named by the
    config's namespace, and every job's worker slots are spread over the live processes.
    The other commands show and steer a running group from anywhere that reaches its backend.
    """


for _command in (run, status, scale, pause, resume, quiet, stop, dump, web, migrate, repair):
    main.add_command(_command)
