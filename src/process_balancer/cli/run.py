"""The ``process-balancer`` command."""

from __future__ import annotations

import logging
import sys

import click

from . import __version__
from .backends import BackendError, open_backend
from .config import ConfigError, load_config, resolve_job_classes
from .loader import add_cwd_to_path, require

LOG_FORMAT = "%(asctime)s %(levelname)s [%(threadName)s] %(name)s: %(message)s"


def _fail(message: str) -> None:
    click.echo(f"process-balancer: {message}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="process-balancer")
def main() -> None:
    """Run long-running, iterative jobs balanced across processes and hosts.

    Start `process-balancer run` on every host: each process joins the group named by the
    config's namespace, and every job's worker slots are spread over the live processes.
    """


@main.command()
@click.option(
    "-c",
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="Config file. Default: ./process_balancer.yml, then ./config/process_balancer.yml.",
)
@click.option(
    "-r",
    "--require",
    "requires",
    multiple=True,
    metavar="MODULE_OR_PATH",
    help="Import a module, a .py file or a package directory before loading job classes. "
    "Repeatable.",
)
@click.option(
    "-e",
    "--environment",
    "environment",
    help="Environment section of the config to merge over `global` (default: $APP_ENV, "
    "else development).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def run(
    config_file: str | None, requires: tuple[str, ...], environment: str | None, verbose: bool
) -> None:
    """Run this process in the foreground until INT or TERM.

    \b
    Signals:
      INT, TERM   stop: give slots to peers, wait up to shutdown_timeout for running
                  iterations, leave the group, exit 0 (a second signal exits at once)
      USR1, TSTP  quiet: keep heartbeating but give every slot to peers
      TTIN        log a stack dump of every thread
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, stream=sys.stderr
    )
    from .manager import Manager

    try:
        add_cwd_to_path()
        settings = load_config(config_file, env=environment)
        for target in requires:
            require(target)
        job_classes = resolve_job_classes(settings)
    except ConfigError as exc:
        _fail(str(exc))
    if settings.config_file is None:
        logging.getLogger(__name__).warning(
            "no config file found (looked for ./process_balancer.yml and "
            "./config/process_balancer.yml); running with no jobs"
        )
    try:
        backend = open_backend(settings.backend, settings.namespace)
        manager = Manager(settings, job_classes, backend)
    except ValueError as exc:
        _fail(str(exc))
    try:
        code = manager.run()
    except BackendError as exc:
        _fail(str(exc))
    finally:
        backend.close()
    sys.exit(code)
