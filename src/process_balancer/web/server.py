"""Serving the dashboard with uvicorn: in the foreground (the CLI) or in a thread (tests,
scripts, programs that embed it)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from types import FrameType, TracebackType

import uvicorn
from starlette.types import ASGIApp

__all__ = ["BackgroundServer", "bind", "serve"]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: any free port); OSError when it is taken."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _config(app: ASGIApp, log_level: str) -> uvicorn.Config:
    # Access logs are off: an open page polls every 2 s. Actions are logged by the app itself.
    return uvicorn.Config(
        app, log_level=log_level, access_log=False, lifespan="on", log_config=None
    )


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(app: ASGIApp, sock: socket.socket, *, log_level: str = "info") -> None:
    """Serve ``app`` on ``sock`` until INT or TERM, then exit with status 0."""
    # uvicorn shuts down on INT/TERM and then raises the signal again for the handler that was
    # there before it: make that an ordinary exit instead of "Aborted!" or death by SIGTERM.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_quietly)
    uvicorn.Server(_config(app, log_level)).run(sockets=[sock])


class BackgroundServer:
    """``app`` served on a loopback port in a daemon thread, for the span of a ``with``."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = bind(host, port)
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        self.server = uvicorn.Server(_config(app, "warning"))
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="pb-web", daemon=True
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self._thread.join(15)
        self.sock.close()
