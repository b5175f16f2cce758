"""The async poller example (examples/async_poller/): its config as shipped, and the whole
example run end to end: its HTTP work queue served by this test on a free local port, two
real ``process-balancer run`` processes draining it with asyncio workers."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from process_balancer.config.loader import add_cwd_to_path
from process_balancer.config.schema import load_config, resolve_job_classes
from process_balancer.runtime.workers import kind_for
from support.harness import wait_until

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "async_poller"


def load_server() -> ModuleType:
    spec = importlib.util.spec_from_file_location("async_poller_server", EXAMPLE / "server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_config_loads_an_asyncio_job_from_the_repository_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("POLLER_URL", raising=False)
    add_cwd_to_path()
    settings = load_config("examples/async_poller/process_balancer.yml")
    job = settings.jobs["poll_queue"]
    assert job.options["base_url"] == "http://127.0.0.1:8765"
    job_class = resolve_job_classes(settings)["poll_queue"]
    assert kind_for(job_class, job.worker) == "asyncio"


@pytest.fixture
def queue_server() -> Iterator[tuple[Any, str]]:
    """The example's work queue of 1,200 items on a free loopback port, for this test."""
    server_module = load_server()
    queue = server_module.WorkQueue(1200)
    server = server_module.make_server(queue, "127.0.0.1", 0, 0.005)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield queue, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def runners() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_two_processes_drain_the_http_queue_each_item_once(
    tmp_path: Path, queue_server: tuple[Any, str], runners: list[subprocess.Popen[str]]
) -> None:
    """Given the example's config pointed at a work queue this test serves, when two
    processes run it, then both take items, the queue drains, no item is done twice, the
    stats answer over HTTP as the README says, and both stop cleanly with TERM."""
    queue, url = queue_server
    config = yaml.safe_load((EXAMPLE / "process_balancer.yml").read_text())
    config["global"]["backend"] = f"sqlite:///{tmp_path / 'coordination.sqlite3'}"
    config["jobs"]["poll_queue"].update(base_url=url, batch_size=10)
    config_path = tmp_path / "process_balancer.yml"
    config_path.write_text(yaml.safe_dump(config))

    def start(name: str) -> subprocess.Popen[str]:
        log = (tmp_path / f"{name}.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "process_balancer", "run", "-c", str(config_path)],
            cwd=str(ROOT),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        runners.append(proc)
        return proc

    a = start("a")
    wait_until(lambda: queue.stats()["by_runner"].get(str(a.pid), 0) > 50, 30, message="a")
    b = start("b")
    wait_until(lambda: queue.stats()["by_runner"].get(str(b.pid), 0) > 0, 30, message="b")
    wait_until(lambda: queue.stats()["done"] == 1200, 60, message="the queue to drain")
    with urllib.request.urlopen(f"{url}/stats", timeout=5) as response:
        stats = json.loads(response.read())
    assert stats["done"] == stats["total"] == 1200
    assert stats["duplicates"] == 0 and stats["claimed"] == 0
    assert set(stats["by_runner"]) == {str(a.pid), str(b.pid)}
    for proc in (a, b):
        proc.send_signal(signal.SIGTERM)
    assert [proc.wait(20) for proc in (a, b)] == [0, 0]
    for name in ("a", "b"):
        log = (tmp_path / f"{name}.log").read_text()
        assert "started the event loop of the asyncio workers" in log
        assert "Traceback" not in log, log
