"""Shared fixtures: a real Redis with a key namespace of its own per test, real processes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from support.harness import IterationLog, Process, write_config

REDIS_URL = os.environ.get("PB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


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
BACKEND_KINDS = ["redis"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_kind" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        kinds = [k for k in BACKEND_KINDS if marker is None or k in marker.args]
        metafunc.parametrize("backend_kind", kinds)


@pytest.fixture
def redis_backend_url(redis_url: str) -> str:
    return redis_url


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
        return proc

    yield start
    for proc in started:
        proc.stop()


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
