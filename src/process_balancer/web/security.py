"""Who may press the dashboard's buttons, and how a page elsewhere is kept from pressing them.

- Every action needs the dashboard token, as ``Authorization: Bearer TOKEN`` or as the form
  field ``token``. Without a configured token, or in read-only mode, every action is refused.
- A request that carries the token in the form (what the page itself sends) must also carry
  the CSRF token of the page: a random value in a ``SameSite=Strict`` HttpOnly cookie, echoed
  in the form field ``csrf_token`` or the ``X-CSRF-Token`` header. A request authenticated with
  the ``Authorization`` header needs no CSRF token: browsers never attach that header on their
  own, so no other site can make a browser send it.
- A request whose ``Origin`` or ``Referer`` names another host, or that a browser marks as
  cross-site (``Sec-Fetch-Site``), is refused before anything else is looked at.
- Responses forbid framing (clickjacking) and any script or style not served by the app.

The token is compared in constant time and never logged, rendered or echoed.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSRF_COOKIE",
    "ActionPolicy",
    "ActionRefused",
    "SecurityHeaders",
    "csrf_token_for",
    "set_csrf_cookie",
]

CSRF_COOKIE = "pb_csrf"
_CSRF_SHAPE = re.compile(r"^[A-Za-z0-9_-]{32,128}$")

#: Sent with every response of the app; ``'self'`` only, so the page runs nothing injected.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class ActionRefused(Exception):
    """An action that is not allowed; the message says why and what to do (HTTP 403)."""


@dataclass(frozen=True)
class ActionPolicy:
    """What an action request must show. ``token`` None means actions are disabled."""

    token: str | None
    read_only: bool = False
    trusted_origins: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.token is not None and not self.read_only

    def disabled_reason(self) -> str | None:
        if self.read_only:
            return "this dashboard is read-only (started with --read-only): actions are disabled"
        if self.token is None:
            return (
                "actions are disabled because no dashboard token is configured: start the "
                "dashboard with --token or PROCESS_BALANCER_WEB_TOKEN set to enable them"
            )
        return None

    def check(self, request: Request, form: Mapping[str, str]) -> None:
        """Raise :class:`ActionRefused` unless ``request`` may perform an action."""
        check_same_origin(request.headers, self.trusted_origins)
        reason = self.disabled_reason()
        if reason is not None:
            raise ActionRefused(reason)
        assert self.token is not None
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                raise ActionRefused("the Authorization header must be 'Bearer TOKEN'")
            self._check_token(given.strip())
            return
        given = form.get("token", "")
        if not given:
            raise ActionRefused(
                "this action needs the dashboard token: send it as 'Authorization: Bearer "
                "TOKEN' or in the form field 'token' (on the page: unlock actions with it at "
                "the top)"
            )
        self._check_token(given)
        check_csrf(request, form)

    def _check_token(self, given: str) -> None:
        assert self.token is not None
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            raise ActionRefused("wrong dashboard token")


def _origin_of(url: str) -> str | None:
    """``host[:port]`` of a URL, lower-cased; None when it has none."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return None
    return netloc.rpartition("@")[2].lower() or None


def check_same_origin(headers: Headers, trusted_origins: Iterable[str] = ()) -> None:
    """Refuse requests a browser made on behalf of another site."""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise ActionRefused(f"cross-site request refused (Sec-Fetch-Site: {fetch_site})")
    host = headers.get("host", "").lower()
    allowed = {host} | {o for o in (_origin_of(t) for t in trusted_origins) if o}
    origin = headers.get("origin")
    if origin is not None:
        if _origin_of(origin) not in allowed:
            raise ActionRefused("cross-origin request refused: its Origin is not this dashboard")
        return
    referer = headers.get("referer")
    if referer is not None and _origin_of(referer) not in allowed:
        raise ActionRefused("cross-origin request refused: its Referer is not this dashboard")


def check_csrf(request: Request, form: Mapping[str, str]) -> None:
    """The page's CSRF token must come back in the form or a header, matching the cookie."""
    if "origin" not in request.headers and "referer" not in request.headers:
        raise ActionRefused(
            "request refused: a form post must carry an Origin or Referer header; "
            "use 'Authorization: Bearer TOKEN' from scripts"
        )
    cookie = request.cookies.get(CSRF_COOKIE, "")
    echoed = form.get("csrf_token") or request.headers.get("x-csrf-token", "")
    if not cookie or not echoed or not secrets.compare_digest(cookie.encode(), echoed.encode()):
        raise ActionRefused(
            "the page's CSRF token is missing or stale: reload the dashboard and try again"
        )


def csrf_token_for(request: Request) -> tuple[str, bool]:
    """The CSRF token of this browser session, and whether it is new (then the response must
    set it with :func:`set_csrf_cookie`)."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if _CSRF_SHAPE.match(current):
        return current, False
    return secrets.token_urlsafe(32), True


def set_csrf_cookie(request: Request, response: Response, value: str) -> None:
    """A session cookie scoped to the dashboard's path, never sent by other sites' pages."""
    response.set_cookie(
        CSRF_COOKIE,
        value,
        path=request.scope.get("root_path", "").rstrip("/") + "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


class SecurityHeaders:
    """ASGI middleware: the headers of :data:`HEADERS` on every response, ``no-store`` on
    everything but static files, and (when ``allowed_hosts`` is given) a 400 for any other
    ``Host``, which keeps DNS-rebinding pages from reading a dashboard bound to loopback."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] | None = None) -> None:
        self.app = app
        self.allowed_hosts = (
            None if allowed_hosts is None else {h.lower().strip("[]") for h in allowed_hosts}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.allowed_hosts is not None:
            host = _origin_of("//" + Headers(scope=scope).get("host", "")) or ""
            hostname = urlsplit("//" + host).hostname or ""
            if hostname not in self.allowed_hosts:
                response = PlainTextResponse(
                    f"this dashboard does not answer to the host name {hostname!r}: start it "
                    "with --allowed-host NAME (allowed_hosts=...) to serve it under that name",
                    status_code=400,
                )
                await response(scope, receive, send)
                return
        path, root = scope.get("path", ""), scope.get("root_path", "")
        static = (path[len(root) :] if path.startswith(root) else path).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                if not static:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
