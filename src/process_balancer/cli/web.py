"""``process-balancer web``: the dashboard of a group, served until Ctrl-C."""

from __future__ import annotations

import logging
import sys

import click

from ..client.api import Client
from ..client.status import DEFAULT_STUCK_AFTER
from .common import EXIT_USAGE, fail, with_client
from .run import LOG_FORMAT

logger = logging.getLogger("process_balancer.web")

#: Host names a dashboard bound to loopback answers to; any other Host header is refused so
#: that a page on another site cannot read it through DNS rebinding.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
#: A shorter token is accepted, with a warning.
SHORT_TOKEN = 16


def _is_loopback(host: str) -> bool:
    return host in LOOPBACK_NAMES or host.startswith("127.")


def _allowed_hosts(host: str, extra: tuple[str, ...]) -> list[str] | None:
    if _is_loopback(host):
        return [*LOOPBACK_NAMES, host, *extra]
    return [host, *extra] if extra else None


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; 0.0.0.0 for every interface (put TLS in front of it).",
)
@click.option("--port", type=click.IntRange(0, 65535), default=9292, show_default=True)
@click.option(
    "--token",
    envvar="PROCESS_BALANCER_WEB_TOKEN",
    metavar="TOKEN",
    help="Secret that every action (scale, pause, resume, quiet, stop) needs. Without it the "
    "dashboard is read-only. Prefer the environment variable PROCESS_BALANCER_WEB_TOKEN: "
    "command lines are visible to other users.",
)
@click.option("--read-only", is_flag=True, help="Show no action buttons and refuse every action.")
@click.option(
    "--stuck-after",
    type=click.FloatRange(min=0),
    default=DEFAULT_STUCK_AFTER,
    show_default=True,
    metavar="SECONDS",
    help="Show a slot as stuck once its current iteration has run this long.",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Also answer to this Host header, e.g. the name a TLS proxy in front forwards. "
    "Repeatable. By default a dashboard on loopback answers only to 127.0.0.1, localhost "
    "and ::1, and one on another address to any name.",
)
@click.option(
    "--trusted-origin",
    "trusted_origins",
    multiple=True,
    metavar="URL",
    help="Accept actions from pages of this origin (https://ops.example.com) too, for a proxy "
    "that rewrites the Host header. Repeatable.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@with_client
def web(
    client: Client,
    host: str,
    port: int,
    token: str | None,
    read_only: bool,
    stuck_after: float,
    allowed_hosts: tuple[str, ...],
    trusted_origins: tuple[str, ...],
    verbose: bool,
) -> None:
    """Serve a web dashboard of the group: processes, slots, jobs, throughput, errors, with
    buttons to scale, pause and resume jobs and to quiet and stop processes.

    \b
    Example:
      PROCESS_BALANCER_WEB_TOKEN=$(openssl rand -hex 24) process-balancer web -c app.yml
    """
    try:
        from ..web import bind, create_app, serve
    except ImportError as exc:
        fail(f"the dashboard needs the web extra ({exc}): pip install 'process-balancer[web]'")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, stream=sys.stderr
    )
    token = token or None
    if token is not None and len(token) < SHORT_TOKEN and not read_only:
        logger.warning(
            "the dashboard token is shorter than %d characters; use a long random one", SHORT_TOKEN
        )
    app = create_app(
        client,
        token=token,
        read_only=read_only,
        stuck_after=stuck_after,
        allowed_hosts=_allowed_hosts(host, allowed_hosts),
        trusted_origins=trusted_origins,
    )
    try:
        sock = bind(host, port)
    except OSError as exc:
        fail(
            f"cannot serve the dashboard on {host}:{port}: {exc.strerror or exc}; choose "
            "another --port or stop whatever listens there",
            EXIT_USAGE,
        )
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    if read_only or token is None:
        mode = "read-only" + ("" if read_only else "; set --token to enable actions")
    else:
        mode = "actions enabled with the token"
    logger.info(
        "dashboard of namespace %r on %s: http://%s:%d/ (%s)",
        client.settings.namespace,
        client.backend.display_url,
        shown,
        bound,
        mode,
    )
    if not _is_loopback(host) and token is not None and not read_only:
        logger.warning(
            "listening on %s without TLS: put a TLS proxy in front so the token is not sent "
            "in clear text",
            host,
        )
    serve(app, sock, log_level="debug" if verbose else "info")
