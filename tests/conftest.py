"""Shared fixtures: a real Redis with a key namespace of its own per test, real processes."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from support.harness import IterationLog, Process, write_config
from support.proxy import Proxy
from support.servers import RedisServer

REDIS_URL = os.environ.get("PB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@functools.cache
def _redis_available() -> bool:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return False
    return True


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not _redis_available():
        if os.environ.get("CI"):
            pytest.fail(f"Redis is not reachable at {REDIS_URL} (CI requires it)")
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    return REDIS_URL


@pytest.fixture
def namespace() -> Iterator[str]:
    """A namespace no other test uses; its Redis keys are deleted afterwards."""
    ns = f"pbtest-{uuid.uuid4().hex[:12]}"
    yield ns
    if _redis_available():
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{ns}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


#: Every coordination backend the multi-process and contract tests run on. A test that only
#: makes sense on some of them says so with ``@pytest.mark.backends("redis", ...)``.
BACKEND_KINDS = ["redis", "sqlite", "postgresql"]
#: Backends that live inside the test's own Python process: no ``process-balancer run`` can
#: join their groups, so a test runs on them only when its ``backends`` marker names them or
#: says ``in_process=True`` (every backend of BACKEND_KINDS, or of its args, and these).
IN_PROCESS_KINDS = ["memory"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_kind" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        if marker is None:
            kinds = list(BACKEND_KINDS)
        else:
            named = list(marker.args or BACKEND_KINDS)
            if marker.kwargs.get("in_process"):
                named += IN_PROCESS_KINDS
            kinds = [k for k in BACKEND_KINDS + IN_PROCESS_KINDS if k in named]
        metafunc.parametrize("backend_kind", kinds)


@pytest.fixture
def redis_backend_url(redis_url: str) -> str:
    return redis_url


@pytest.fixture
def sqlite_backend_url(tmp_path: Path) -> str:
    """A SQLite coordination file of this test's own (``sqlite:////absolute/path``)."""
    return f"sqlite:///{tmp_path / 'coordination.sqlite3'}"


@pytest.fixture
def memory_backend_url() -> Iterator[str]:
    """An in-memory store of this test's own (``memory://NAME``), dropped afterwards."""
    from process_balancer.backends.memory.store import discard

    name = f"pbtest-{uuid.uuid4().hex[:12]}"
    yield f"memory://{name}"
    discard(name)


POSTGRES_URL = os.environ.get("PB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_problem() -> str | None:
    import psycopg

    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        return " ".join(str(exc).split())
    return None


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL server the tests use (database ``test``)."""
    problem = _postgres_problem()
    if problem is not None:
        reason = f"PostgreSQL is not reachable at {POSTGRES_URL}: {problem}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI requires it)")
        pytest.skip(reason)
    return POSTGRES_URL


@pytest.fixture
def postgres_schema(postgres_url: str) -> Iterator[str]:
    """A schema name no other test uses; the schema is dropped (CASCADE) afterwards."""
    import psycopg

    schema = f"pbt_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '20s'")
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def postgresql_backend_url(postgres_url: str, postgres_schema: str) -> str:
    """The test database with a schema of this test's own (``?schema=pbt_...``)."""
    return f"{postgres_url}?schema={postgres_schema}"


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which servers the run reaches: tests of an unreachable one are skipped (failed in CI)."""
    missing = "fail (CI=true)" if os.environ.get("CI") else "are skipped"
    redis_state = "reachable" if _redis_available() else f"NOT reachable: its tests {missing}"
    postgres_problem = _postgres_problem()
    postgres_state = (
        "reachable"
        if postgres_problem is None
        else f"NOT reachable ({postgres_problem}): its tests {missing}"
    )
    return [
        f"backends under test: {', '.join(BACKEND_KINDS)}; sqlite is built in (a file per test); "
        f"{', '.join(IN_PROCESS_KINDS)} where a test's backends marker asks for it",
        f"Redis at {REDIS_URL} (PB_TEST_REDIS_URL): {redis_state}",
        f"PostgreSQL at {POSTGRES_URL} (PB_TEST_POSTGRES_URL): {postgres_state}",
    ]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Fold the skips of every test that needs one unreachable server into one summary line
    (pytest would list each test's own location)."""
    report = yield
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if " is not reachable at " in reason:
            report.longrepr = (__file__, None, reason)
    return report


@pytest.fixture
def backend_url(backend_kind: str, request: pytest.FixtureRequest) -> str:
    """The URL of this test's group on the backend under test (see BACKEND_KINDS)."""
    url: str = request.getfixturevalue(f"{backend_kind}_backend_url")
    return url


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def iteration_log(tmp_path: Path) -> IterationLog:
    return IterationLog(tmp_path / "iterations.jsonl")


@pytest.fixture
def group_config(
    tmp_path: Path, backend_url: str, namespace: str, iteration_log: IterationLog
) -> Callable[..., Path]:
    """Write a config for this test's group on the backend under test; jobs get the path of
    the iteration log as an option."""

    def make(
        jobs: dict[str, dict[str, Any]], name: str = "process_balancer.yml", **settings: Any
    ) -> Path:
        for job in jobs.values():
            job.setdefault("log_path", str(iteration_log.path))
        return write_config(
            tmp_path / name, backend=backend_url, namespace=namespace, jobs=jobs, **settings
        )

    return make


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start real ``process-balancer run`` processes; all are killed at teardown."""
    started: list[Process] = []

    def start(config: Path, name: str | None = None, *args: str) -> Process:
        proc = Process(config, tmp_path, name or f"p{len(started)}", args)
        started.append(proc)
        _wait_for_sqlite_file(config, proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def _wait_for_sqlite_file(config: Path, proc: Process, timeout: float = 15.0) -> None:
    """On a SQLite backend, wait until the process has created the group's file (or exited):
    commands that only read, such as ``status``, refuse a file that does not exist yet."""
    import time

    import yaml

    from process_balancer.backends.sqlite.connection import sqlite_path
    from support.harness import TESTS_DIR

    backend = ((yaml.safe_load(config.read_text()) or {}).get("global") or {}).get("backend")
    if not isinstance(backend, str) or not backend.startswith("sqlite:"):
        return
    path = TESTS_DIR / sqlite_path(backend)
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.popen.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Any]:
    """A redis-server of this test's own on a free loopback port, for outage tests."""
    import socket
    import subprocess
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    client.close()
    proc.url = url  # type: ignore[attr-defined]
    yield proc
    proc.kill()
    proc.wait(10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own that it can stall (``pause()``/``resume()``), kill,
    or restart empty on the same port (``restart_empty()``)."""
    server = RedisServer(tmp_path)
    yield server
    server.close()


@pytest.fixture
def clock_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """Like ``redis_server``, and ``step_clock(seconds)`` moves its wall clock (``TIME``, Lua,
    key expiry) that far ahead of the host's."""
    server = RedisServer(tmp_path, clock=True)
    yield server
    server.close()


@pytest.fixture
def spawn_behind_proxy(
    tmp_path: Path,
    backend_url: str,
    backend_kind: str,
    namespace: str,
    iteration_log: IterationLog,
    spawn: Callable[..., Process],
) -> Iterator[Callable[..., tuple[Process, Proxy]]]:
    """Start a runner of this test's group whose backend URL points at a TCP proxy of its
    own, so the test can cut, blackhole, drop or delay that one process's link."""
    if backend_kind == "sqlite":
        raise ValueError("a SQLite backend is a local file: there is no link to proxy")
    proxies: list[Proxy] = []

    def start(jobs: dict[str, dict[str, Any]], name: str, **settings: Any) -> tuple[Process, Proxy]:
        parts = urlsplit(backend_url)
        proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 0)
        proxies.append(proxy)
        for job in jobs.values():
            job.setdefault("log_path", str(iteration_log.path))
        config = write_config(
            tmp_path / f"{name}.yml",
            backend=proxy.url(backend_url),
            namespace=namespace,
            jobs=jobs,
            **settings,
        )
        return spawn(config, name), proxy

    yield start
    for proxy in proxies:
        proxy.close()


#: tests/<folder>/ -> the marker every test in it carries (-m unit, -m "not integration"...).
FOLDER_MARKERS = {
    "unit": "unit",
    "contract": "contract",
    "backends": "backend",
    "integration": "integration",
    "web": "web",
    "simulation": "simulation",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        folder = item.path.parent.name
        marker = FOLDER_MARKERS.get(folder)
        if marker is not None:
            item.add_marker(getattr(pytest.mark, marker))
