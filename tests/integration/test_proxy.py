"""The fault-injection proxy (tests/support/proxy.py) against the real Redis.

The fault tests trust it to cut, blackhole, drop and delay one process's link; these tests
show each mode does exactly that to a real client and a real server.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis

from support.proxy import Proxy


@pytest.fixture
def proxy(redis_url: str) -> Iterator[Proxy]:
    parts = urlsplit(redis_url)
    with Proxy(parts.hostname or "127.0.0.1", parts.port or 6379) as p:
        yield p


@pytest.fixture
def through(proxy: Proxy, redis_url: str) -> Iterator[redis.Redis]:
    """A client whose every connection goes through the proxy."""
    client = redis.Redis.from_url(
        proxy.url(redis_url), socket_timeout=0.5, socket_connect_timeout=0.5, retry_on_timeout=False
    )
    yield client
    client.close()


def raw_command(sock: socket.socket, *words: str) -> None:
    """Send one command in the Redis protocol on a plain socket."""
    payload = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)
    sock.sendall(payload.encode())


def reply(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    try:
        return sock.recv(1024)
    except TimeoutError:
        return b""


def answered_through(proxy: Proxy) -> bool:
    """Whether a new connection through the proxy gets an answer to PING."""
    try:
        with socket.create_connection((proxy.host, proxy.port), timeout=1) as sock:
            raw_command(sock, "PING")
            return reply(sock, 1) == b"+PONG\r\n"
    except OSError:  # reset while connecting, sending or reading
        return False


def test_pass_forwards_to_the_target_from_a_port_of_its_own(
    proxy: Proxy, through: redis.Redis, redis_url: str
) -> None:
    assert proxy.port != urlsplit(redis_url).port
    assert (
        proxy.url("redis://:secret@127.0.0.1:6379/3") == f"redis://:secret@127.0.0.1:{proxy.port}/3"
    )
    assert through.ping()
    assert proxy.accepted == 1 and proxy.bytes_forwarded > 0


def test_cut_resets_open_connections_and_refuses_new_ones_until_healed(
    proxy: Proxy, through: redis.Redis
) -> None:
    assert through.ping()
    proxy.cut()
    with pytest.raises(redis.ConnectionError):
        through.ping()
    assert not answered_through(proxy), "a new connection must be refused"
    proxy.heal()
    assert through.ping()


def test_blackhole_holds_bytes_and_delivers_them_late_on_heal(
    proxy: Proxy, rclient: redis.Redis, namespace: str
) -> None:
    key = f"{namespace}:late"
    with socket.create_connection((proxy.host, proxy.port), timeout=1) as sock:
        raw_command(sock, "PING")
        assert reply(sock, 1) == b"+PONG\r\n"
        proxy.blackhole()
        raw_command(sock, "SET", key, "held")
        assert reply(sock, 0.5) == b"", "nothing may come back through a blackhole"
        assert rclient.get(key) is None, "nothing may reach the server through a blackhole"
        proxy.heal(deliver_held=True)
        assert reply(sock, 2) == b"+OK\r\n"
    assert rclient.get(key) == "held"


def test_connections_opened_during_a_blackhole_are_held_too(
    proxy: Proxy, rclient: redis.Redis, namespace: str
) -> None:
    key = f"{namespace}:backlog"
    proxy.blackhole()
    with socket.create_connection((proxy.host, proxy.port), timeout=1) as sock:
        raw_command(sock, "SET", key, "queued")
        assert reply(sock, 0.5) == b""
        assert rclient.get(key) is None
        proxy.heal(deliver_held=True)
        assert reply(sock, 2) == b"+OK\r\n"
    assert rclient.get(key) == "queued"


def test_a_blackhole_healed_without_delivery_loses_the_bytes_and_the_connection(
    proxy: Proxy, through: redis.Redis, rclient: redis.Redis, namespace: str
) -> None:
    key = f"{namespace}:lost"
    with socket.create_connection((proxy.host, proxy.port), timeout=1) as sock:
        raw_command(sock, "PING")
        assert reply(sock, 1) == b"+PONG\r\n"
        proxy.blackhole()
        raw_command(sock, "SET", key, "never")
        time.sleep(0.2)
        proxy.heal()
        sock.settimeout(2)
        with pytest.raises(ConnectionResetError):
            if not sock.recv(16):
                raise ConnectionResetError("closed")
    time.sleep(0.2)
    assert rclient.get(key) is None
    assert through.ping(), "new connections pass once healed"


def test_drop_discards_requests_and_replies_and_heal_resets_those_connections(
    proxy: Proxy, through: redis.Redis, rclient: redis.Redis, namespace: str
) -> None:
    key = f"{namespace}:dropped"
    assert through.ping()
    proxy.drop()
    with pytest.raises(redis.TimeoutError):
        through.set(key, "x")
    time.sleep(0.2)
    assert rclient.get(key) is None
    proxy.heal()
    # The pool's connection lost bytes and was reset; the client reconnects.
    assert through.set(key, "y")
    assert rclient.get(key) == "y"


def test_delay_makes_every_round_trip_late(proxy: Proxy, through: redis.Redis) -> None:
    assert through.ping()
    proxy.delay(0.15)
    started = time.monotonic()
    assert through.ping()
    took = time.monotonic() - started
    assert 0.3 <= took < 1.5, f"a round trip through delay(0.15) took {took:.2f}s"
    proxy.heal()
    started = time.monotonic()
    assert through.ping()
    assert time.monotonic() - started < 0.1
