"""A small TCP proxy whose link can be cut, blackholed, made lossy or slow while it runs.

One proxy stands between one runner process and its backend, so a test can take that one
process's network away and give it back::

    proxy = Proxy("127.0.0.1", 6379)       # listens on a free loopback port
    url = proxy.url("redis://127.0.0.1:6379/0")
    proxy.blackhole()                       # bytes are held, nothing is delivered
    proxy.heal(deliver_held=True)           # ...and the held bytes arrive late

Modes:

* ``pass``: bytes flow both ways.
* ``cut``: every open connection is reset and new ones are reset as soon as they arrive, as
  when a host or a firewall rejects the peer.
* ``blackhole``: nothing is delivered either way and nothing is refused: connections stay
  open, the proxy stops reading them (so bytes wait in the kernel's buffers and a sender
  blocks once they are full, as with TCP over a dead link) and new connections wait in the
  listen backlog. ``heal(deliver_held=True)`` delivers everything that was held, in order,
  as packets that arrive late; ``heal()`` drops it, and the connections that held it are
  reset (a TCP stream cannot skip bytes: its peers give up on it).
* ``drop``: bytes are read and thrown away, both ways; connections stay open. Connections
  that lost bytes are reset on ``heal()``.
* ``delay(seconds)``: every chunk is delivered ``seconds`` late.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from urllib.parse import urlsplit, urlunsplit

CHUNK = 65536
#: How often a blocked thread looks at the mode and the closed flag again.
TICK = 0.05


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN, as a refusing host would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client = client
        self.upstream = upstream
        self.closed = False
        self.lost_bytes = False  # some bytes were dropped: the stream cannot be resumed

    def close(self) -> None:
        self.closed = True
        _reset(self.client)
        if self.upstream is not None:
            _reset(self.upstream)


class Proxy:
    """A TCP proxy from a free loopback port to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((listen_host, 0))
        self._listener.listen(128)
        self.host, self.port = self._listener.getsockname()[:2]
        self._mode = "pass"
        self._delay = 0.0
        self._cond = threading.Condition()
        self._links: list[_Link] = []
        self._closed = False
        self.accepted = 0
        self.bytes_forwarded = 0
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"proxy-{self.port}", daemon=True
        )
        self._acceptor.start()

    # -- control -------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    def url(self, backend_url: str) -> str:
        """``backend_url`` with its host and port replaced by this proxy's."""
        parts = urlsplit(backend_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@" if userinfo else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}{self.host}:{self.port}"))

    def cut(self) -> None:
        """Reset every connection now and every new one as it arrives."""
        self._set("cut")
        for link in self._take_links():
            link.close()

    def blackhole(self) -> None:
        """Deliver nothing and refuse nothing until healed."""
        self._set("blackhole")

    def drop(self) -> None:
        """Read and discard every byte, both ways, until healed."""
        self._set("drop")

    def delay(self, seconds: float) -> None:
        """Deliver every chunk ``seconds`` late."""
        with self._cond:
            self._delay = seconds
        self._set("delay")

    def heal(self, *, deliver_held: bool = False) -> None:
        """Back to ``pass``. Bytes a blackhole held are delivered if ``deliver_held``, else
        dropped along with their connections; connections that lost bytes are reset."""
        with self._cond:
            was = self._mode
            if was == "blackhole":
                self._drain_backlog(keep=deliver_held)
            doomed = [
                link
                for link in self._links
                if link.lost_bytes or (was == "blackhole" and not deliver_held)
            ]
            self._links = [link for link in self._links if link not in doomed]
            self._mode = "pass"
            self._delay = 0.0
            self._cond.notify_all()
        for link in doomed:
            link.close()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for link in self._take_links():
            link.close()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._acceptor.join(timeout=2)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _set(self, mode: str) -> None:
        with self._cond:
            self._mode = mode
            self._cond.notify_all()

    def _take_links(self) -> list[_Link]:
        with self._cond:
            links, self._links = self._links, []
        return links

    # -- the threads ---------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed:
            with self._cond:
                # A blackhole leaves new connections in the kernel's listen backlog.
                while self._mode == "blackhole" and not self._closed:
                    self._cond.wait(TICK)
            try:
                ready, _, _ = select.select([self._listener], [], [], TICK)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            with self._cond:
                if self._mode == "blackhole":
                    continue  # healed into a blackhole since the select: leave it queued
                try:
                    client, _ = self._listener.accept()
                except OSError:
                    continue
                self._admit(client)

    def _drain_backlog(self, *, keep: bool) -> None:
        """Accept what queued up during a blackhole: to forward it, or to reset it."""
        self._listener.setblocking(False)
        try:
            while True:
                try:
                    client, _ = self._listener.accept()
                except (BlockingIOError, OSError):
                    break
                client.setblocking(True)
                if keep:
                    self._admit(client, mode="pass")
                else:
                    _reset(client)
        finally:
            self._listener.setblocking(True)

    def _admit(self, client: socket.socket, mode: str | None = None) -> None:
        """Start forwarding one accepted connection (called holding ``_cond``)."""
        mode = mode or self._mode
        self.accepted += 1
        if mode == "cut":
            _reset(client)
            return
        upstream = None
        if mode != "drop":
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                return
        link = _Link(client, upstream)
        if upstream is None:
            link.lost_bytes = True
        self._links.append(link)
        for src, dst in ((client, upstream), (upstream, client)):
            if src is None:
                continue
            threading.Thread(
                target=self._pump,
                args=(link, src, dst),
                name=f"proxy-{self.port}-pump",
                daemon=True,
            ).start()

    def _pump(self, link: _Link, src: socket.socket, dst: socket.socket | None) -> None:
        try:
            while not link.closed:
                if not self._wait_readable(link, src):
                    continue
                data = src.recv(CHUNK)
                if not data:
                    break
                mode, delay = self._mode_after_hold(link)
                if link.closed:
                    break
                if mode == "drop" or dst is None:
                    link.lost_bytes = True
                    continue
                if mode == "delay" and delay > 0:
                    time.sleep(delay)
                dst.sendall(data)
                self.bytes_forwarded += len(data)
        except (OSError, ValueError):  # ValueError: select() on a socket closed meanwhile
            pass
        finally:
            # One side ended: end the other, as a real peer closing would.
            with self._cond:
                if link in self._links:
                    self._links.remove(link)
            link.close()

    def _wait_readable(self, link: _Link, src: socket.socket) -> bool:
        """Wait until ``src`` has bytes, and while blackholed do not read at all."""
        with self._cond:
            while self._mode == "blackhole" and not link.closed and not self._closed:
                self._cond.wait(TICK)
        if self._closed:
            link.closed = True
            return False
        ready, _, _ = select.select([src], [], [], TICK)
        return bool(ready)

    def _mode_after_hold(self, link: _Link) -> tuple[str, float]:
        """The mode to forward a chunk under: one read after a blackhole began is held
        here until the blackhole is healed."""
        with self._cond:
            while self._mode == "blackhole" and not link.closed and not self._closed:
                self._cond.wait(TICK)
            return self._mode, self._delay
