"""The dashboard's ASGI app: one page, two JSON endpoints, and the actions.

Every URL the page uses is relative to ``<base href>``, which is the request's ``root_path``,
so the app works at ``/`` as well as under ``Mount("/balancer", app=...)`` or behind a proxy
that sets a root path.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..backends import BackendError
from ..client.api import Client
from ..client.status import DEFAULT_STUCK_AFTER
from .actions import ActionError, Actions
from .sampler import Sample, Sampler, Throughput
from .security import (
    ActionPolicy,
    ActionRefused,
    SecurityHeaders,
    csrf_token_for,
    set_csrf_cookie,
)
from .view import dashboard

__all__ = ["DEFAULT_HISTORY", "DEFAULT_SAMPLE_INTERVAL", "create_app", "render_live"]

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
#: Seconds between two throughput samples.
DEFAULT_SAMPLE_INTERVAL = 5.0
#: Samples kept: 30 minutes at the default interval.
DEFAULT_HISTORY = 360
#: Largest action request body read, in bytes: the forms have three short fields.
MAX_FORM_BYTES = 16 * 1024
#: Milliseconds between two refreshes of an open page.
POLL_MS = 2000


class _FormError(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


async def _read_form(request: Request) -> dict[str, str]:
    """The url-encoded fields of a small POST body (the last value of a repeated field)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise _FormError(413, f"request body larger than {MAX_FORM_BYTES} bytes")
    if not body:
        return {}
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise _FormError(415, "send the fields form-encoded (application/x-www-form-urlencoded)")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _FormError(400, f"unreadable form: {exc}") from None
    return {name: values[-1] for name, values in fields.items()}


#: Autoescaped: identities, job ids and error messages are text written by processes.
TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(name: str, **context: Any) -> str:
    return TEMPLATES.get_template(name).render(**context)


def render_live(
    status: Mapping[str, Any], sample: Sample | None, *, actions: bool
) -> dict[str, str]:
    """The parts of the page that every refresh replaces, as HTML."""
    view = dashboard(status, sample)
    return {
        "summary": render("_summary.html", view=view),
        "tables": render("_tables.html", view=view, actions=actions),
    }


def _answer(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"ok": status_code < 300, "message": message}, status_code=status_code)


class Dashboard:
    """The endpoints, bound to one :class:`Client`."""

    def __init__(
        self,
        client: Client,
        policy: ActionPolicy,
        *,
        stuck_after: float,
        throughput: Throughput,
        sampler: Sampler,
        command_wait: float,
    ) -> None:
        self.client = client
        self.policy = policy
        self.stuck_after = stuck_after
        self.throughput = throughput
        self.sampler = sampler
        self.actions = Actions(client, command_wait=command_wait)

    def read_status(self) -> dict[str, Any]:
        return self.client.status(stuck_after=self.stuck_after)

    def _live_html(self, status: dict[str, Any]) -> dict[str, str]:
        return render_live(status, self.throughput.latest(), actions=self.policy.enabled)

    async def _status(self) -> tuple[dict[str, Any] | None, str | None]:
        self.sampler.ensure_started()
        try:
            return await run_in_threadpool(self.read_status), None
        except BackendError as exc:
            return None, f"cannot reach the backend: {exc}"

    async def page(self, request: Request) -> Response:
        status, problem = await self._status()
        csrf, fresh = csrf_token_for(request)
        html = render(
            "index.html",
            base=request.scope.get("root_path", "").rstrip("/") + "/",
            namespace=self.client.settings.namespace,
            backend=self.client.backend.display_url,
            csrf=csrf,
            actions=self.policy.enabled,
            disabled_reason=self.policy.disabled_reason(),
            read_only_flag=self.policy.read_only,
            problem=problem,
            live=self._live_html(status) if status is not None else None,
            poll_ms=POLL_MS,
        )
        response = HTMLResponse(html, status_code=200 if problem is None else 503)
        if fresh:
            set_csrf_cookie(request, response, csrf)
        return response

    async def api_status(self, request: Request) -> Response:
        status, problem = await self._status()
        if status is None:
            return JSONResponse({"error": problem}, status_code=503)
        return JSONResponse(status)

    async def api_live(self, request: Request) -> Response:
        status, problem = await self._status()
        if status is None:
            return JSONResponse({"error": problem}, status_code=503)
        return JSONResponse(
            {
                "generated_at": status["generated_at"],
                "html": self._live_html(status),
                "chart": {"interval": self.sampler.interval, "samples": self.throughput.series()},
            }
        )

    async def action(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not self.actions.knows(name):
            return _answer(404, f"no action {name!r}; use one of {', '.join(Actions.NAMES)}")
        try:
            form = await _read_form(request)
        except _FormError as exc:
            return _answer(exc.status_code, str(exc))
        client_host = request.client.host if request.client else "?"
        try:
            self.policy.check(request, form)
        except ActionRefused as exc:
            logger.warning("dashboard refused %s from %s: %s", name, client_host, exc)
            return _answer(403, f"refused: {exc}")
        try:
            status_code, message = await run_in_threadpool(self.actions.run, name, form)
        except ActionError as exc:
            return _answer(exc.status_code, str(exc))
        except BackendError as exc:
            return _answer(503, f"cannot reach the backend: {exc}")
        if name != "check":
            logger.info("dashboard action %s from %s: %s", name, client_host, message)
        return _answer(status_code, message)


def create_app(
    client: Client,
    *,
    token: str | None,
    read_only: bool = False,
    stuck_after: float = DEFAULT_STUCK_AFTER,
    sample_interval: float = DEFAULT_SAMPLE_INTERVAL,
    history: int = DEFAULT_HISTORY,
    command_wait: float = 5.0,
    allowed_hosts: Sequence[str] | None = None,
    trusted_origins: Sequence[str] = (),
) -> Starlette:
    """The dashboard of the group ``client`` is connected to, as a Starlette app.

    Args:
        token: the secret every action needs; None (or empty) disables actions.
        read_only: render no action buttons and refuse every action, token or not.
        stuck_after: seconds after which a running iteration is shown as stuck.
        sample_interval, history: throughput sampling period (seconds) and samples kept.
        command_wait: seconds ``quiet`` and ``stop`` wait for the process's acknowledgement.
        allowed_hosts: if given, requests with any other ``Host`` get a 400 (DNS rebinding).
        trusted_origins: other origins (``https://ops.example.com``) allowed to post actions,
            for a proxy that rewrites the Host header.

    The caller keeps ownership of ``client``. Mount the app inside another one with
    ``Mount("/balancer", app=create_app(client, token=...))``.
    """
    policy = ActionPolicy(
        token=token or None, read_only=read_only, trusted_origins=tuple(trusted_origins)
    )
    throughput = Throughput(history)
    sampler = Sampler(lambda: client.status(stuck_after=stuck_after), throughput, sample_interval)
    board = Dashboard(
        client,
        policy,
        stuck_after=stuck_after,
        throughput=throughput,
        sampler=sampler,
        command_wait=command_wait,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sampler.ensure_started()
        try:
            yield
        finally:
            await run_in_threadpool(sampler.stop)

    routes: list[Route | Mount] = [
        Route("/", board.page, methods=["GET"]),
        Route("/api/status", board.api_status, methods=["GET"]),
        Route("/api/live", board.api_live, methods=["GET"]),
        Route("/actions/{name}", board.action, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders, allowed_hosts=allowed_hosts)],
        lifespan=lifespan,
    )
    app.state.dashboard = board
    # Mounted apps get no lifespan events: the host app stops the sampler with this.
    app.state.sampler = sampler
    return app
