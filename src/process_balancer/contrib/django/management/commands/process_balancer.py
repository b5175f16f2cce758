"""``python manage.py process_balancer COMMAND [options]``: the ``process-balancer`` CLI, run
once Django has loaded its settings and apps, so job classes can import models."""

from __future__ import annotations

import argparse
import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from .....cli import COMMANDS, main

#: Django's own options, which it has already applied when the command runs: they must not
#: reach the CLI when given after COMMAND.
DJANGO_VALUE_OPTIONS = ("--settings", "--pythonpath")


def cli_arguments(args: list[str], config_file: str | None) -> list[str]:
    """The CLI's arguments: ``args`` without Django's own options, and ``-c config_file``
    after the subcommand unless ``args`` name a config file already."""
    kept: list[str] = []
    skip_next = False
    for arg in args:
        if skip_next:
            skip_next = False
        elif arg in DJANGO_VALUE_OPTIONS:
            skip_next = True
        elif not arg.startswith(tuple(f"{option}=" for option in DJANGO_VALUE_OPTIONS)):
            kept.append(arg)
    if config_file is None or not kept or kept[0] not in COMMANDS:
        return kept
    named = any(
        arg in ("-c", "--config") or arg.startswith("--config=") or arg.startswith("-c")
        for arg in kept[1:]
    )
    return kept if named else [kept[0], "-c", config_file, *kept[1:]]


class Command(BaseCommand):  # type: ignore[misc]
    help = (
        "Run the process-balancer CLI with this project's settings loaded: "
        f"{', '.join(COMMANDS)}. `manage.py process_balancer run` joins the group and runs "
        "this process's share of the slots until INT or TERM; `manage.py process_balancer "
        "COMMAND --help` shows a command's options. The config file is -c, else the "
        "PROCESS_BALANCER_CONFIG setting, else ./process_balancer.yml."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "cli_args",
            nargs=argparse.REMAINDER,
            metavar="COMMAND [OPTIONS]",
            help=f"a process-balancer command ({', '.join(COMMANDS)}) and its options",
        )

    def handle(self, *_: Any, cli_args: list[str], **__: Any) -> None:
        configured = getattr(settings, "PROCESS_BALANCER_CONFIG", None)
        config_file = os.fspath(configured) if configured is not None else None
        # The CLI exits with its own status (click's standalone mode): 0, 1 or 2 as
        # `process-balancer` would, so a supervisor sees the same codes either way.
        main.main(
            args=cli_arguments(cli_args, config_file),
            prog_name="manage.py process_balancer",
            standalone_mode=True,
        )
