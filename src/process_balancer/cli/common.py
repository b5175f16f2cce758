"""What every group command shares: how to name the group, and how failures end the command."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, NoReturn, TypeVar

import click

from ..backends import BackendError, CorruptStateError, open_backend
from ..client.api import Client
from ..config.schema import ConfigError, Settings, load_config, settings_from

#: The operation could not be done: unreachable backend, refused by the group's state, or a
#: process that did not acknowledge.
EXIT_FAILED = 1
#: The command line or the config is wrong; nothing was done.
EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``process-balancer: <message>`` to stderr and exit with ``code``."""
    click.echo(f"process-balancer: {message}", err=True)
    sys.exit(code)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def config_options(func: F) -> F:
    """``-c`` and ``-e`` as ``run`` reads them."""
    func = click.option(
        "-e",
        "--environment",
        "environment",
        help="Environment section of the config to merge over `global` (default: $APP_ENV, "
        "else development).",
    )(func)
    return click.option(
        "-c",
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        help="Config file. Default: ./process_balancer.yml, then ./config/process_balancer.yml.",
    )(func)


def group_options(func: F) -> F:
    """``-c``/``-e``, plus ``--backend`` and ``--namespace`` to name a group without a file."""
    func = click.option(
        "--namespace",
        metavar="NAME",
        help="Namespace of the group; overrides the config's `namespace`.",
    )(func)
    func = click.option(
        "--backend",
        "backend_url",
        metavar="URL",
        help="Backend URL such as redis://host:6379/0; overrides the config's `backend`.",
    )(func)
    return config_options(func)


def load_settings(
    config_file: str | None,
    environment: str | None,
    backend_url: str | None,
    namespace: str | None,
) -> Settings:
    """The config (``-c``, else the default locations, else defaults: ``REDIS_URL``, else the
    default SQLite file) with ``--backend`` / ``--namespace`` over it. Exits 2 with the
    problems on a bad config."""
    try:
        settings = load_config(config_file, env=environment)
    except ConfigError as exc:
        fail(str(exc))
    if backend_url is None and namespace is None:
        return settings
    try:
        given = settings_from(backend=backend_url, namespace=namespace, environ={})
    except ConfigError as exc:
        fail("; ".join(f"--{problem}" for problem in exc.problems))
    return replace(
        settings,
        backend=given.backend if backend_url is not None else settings.backend,
        namespace=given.namespace if namespace is not None else settings.namespace,
    )


@contextmanager
def backend_errors() -> Iterator[None]:
    """Turn backend failures into one line on stderr and exit status 1."""
    try:
        yield
    except CorruptStateError as exc:
        fail(f"the backend holds data this version cannot read: {_one_line(str(exc))}", 1)
    except BackendError as exc:
        fail(f"cannot reach the backend: {_one_line(str(exc))}", EXIT_FAILED)


def with_client(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the group options and call it with a connected :class:`Client` first."""
    return _client_command(func, create=True)


def with_reading_client(func: Callable[..., Any]) -> Callable[..., Any]:
    """:func:`with_client` for commands that change no state (status, and commands to live
    processes): a SQLite file that does not exist is reported (exit 1), never created."""
    return _client_command(func, create=False)


def _client_command(func: Callable[..., Any], *, create: bool) -> Callable[..., Any]:
    @group_options
    @functools.wraps(func)
    def command(
        config_file: str | None,
        environment: str | None,
        backend_url: str | None,
        namespace: str | None,
        **kwargs: Any,
    ) -> Any:
        settings = load_settings(config_file, environment, backend_url, namespace)
        try:
            client = Client(
                settings, open_backend(settings.backend, settings.namespace, create=create)
            )
        except ValueError as exc:
            fail(_one_line(str(exc)))
        except BackendError as exc:
            fail(_one_line(str(exc)), EXIT_FAILED)
        try:
            with backend_errors():
                return func(client, **kwargs)
        finally:
            client.close()

    return command
