"""``process-balancer run``: this process joins the group and runs its share of the slots."""

from __future__ import annotations

import dataclasses
import logging
import sys

import click

from ..backends import BackendError, open_backend
from ..config import checks, defaults
from ..config.loader import add_cwd_to_path, require
from ..config.schema import ConfigError, Settings, load_config, resolve_job_classes
from .common import config_options, fail

LOG_FORMAT = "%(asctime)s %(levelname)s [%(threadName)s] %(name)s: %(message)s"


def with_flags(
    settings: Settings, extra_tags: tuple[str, ...], stable_identity: str | None
) -> Settings:
    """The settings with ``run``'s flags applied: tags are added, a stable identity wins."""
    if extra_tags:
        merged = tuple(sorted({*settings.tags, *extra_tags}))
        settings = dataclasses.replace(settings, tags=merged)
    if stable_identity is not None:
        settings = dataclasses.replace(settings, stable_identity=stable_identity)
    return settings


@click.command()
@config_options
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
    "-t",
    "--tag",
    "tags",
    multiple=True,
    metavar="TAG",
    help="A tag of this process, added to the config's `tags:`; jobs may require or prefer "
    "tags (`placement:`). Repeatable.",
)
@click.option(
    "--stable-identity",
    "stable_identity",
    metavar="NAME",
    help="Join as member NAME on every run (e.g. a StatefulSet pod's name), so a restart "
    "within process_expiry gets the same slots back; overrides the config's "
    "`stable_identity:`.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def run(
    config_file: str | None,
    requires: tuple[str, ...],
    tags: tuple[str, ...],
    stable_identity: str | None,
    environment: str | None,
    verbose: bool,
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
    from ..ops.metrics import MetricsServerError
    from ..runtime.manager import Manager

    try:
        extra_tags = checks.tags(list(tags))
    except checks.Invalid as exc:
        fail(f"--tag: {exc}")
    if stable_identity is not None:
        try:
            checks.stable_identity(stable_identity)
        except checks.Invalid as exc:
            fail(f"--stable-identity: {exc}")
    try:
        add_cwd_to_path()
        settings = load_config(config_file, env=environment)
        settings = with_flags(settings, extra_tags, stable_identity)
        for target in requires:
            require(target)
        job_classes = resolve_job_classes(settings)
    except ConfigError as exc:
        fail(str(exc))
    if settings.config_file is None:
        logging.getLogger(__name__).warning(
            "no config file found (looked for ./process_balancer.yml and "
            "./config/process_balancer.yml); running with no jobs"
        )
    elif not settings.jobs:
        # Warned, not refused, as Celery and Sidekiq start a worker with nothing to run: a
        # config whose jobs differ per environment must not crash-loop a deployment.
        logging.getLogger(__name__).warning(
            "%s names no jobs (`jobs:` is empty or missing): this process joins namespace %s "
            "but runs nothing; add entries such as `jobs: {my_job: {class: myapp.jobs:MyJob}}`",
            settings.config_file,
            settings.namespace,
        )
    try:
        backend = open_backend(settings.backend, settings.namespace)
        manager = Manager(settings, job_classes, backend)
        if settings.metrics_port is not None:
            from ..ops.metrics import ProcessMetrics

            manager.observers.append(
                ProcessMetrics(manager, settings.metrics_host, settings.metrics_port)
            )
    except (ValueError, BackendError) as exc:
        fail(str(exc))
    notice = backend.scope_notice(default=settings.backend == defaults.BACKEND_URL)
    if notice is not None:
        logging.getLogger(__name__).info(notice)
    if settings.tags:
        logging.getLogger(__name__).info("this process's tags: %s", ", ".join(settings.tags))
    if manager.stable is not None:
        logging.getLogger(__name__).info(
            "stable identity %s, instance %s", manager.stable.name, manager.stable.instance
        )
    try:
        code = manager.run()
    except (BackendError, MetricsServerError) as exc:
        fail(str(exc))
    finally:
        backend.close()
    sys.exit(code)
