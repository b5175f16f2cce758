"""Prometheus metrics and the /healthz and /readyz probes of real processes."""

from __future__ import annotations

import signal
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from process_balancer.backends.memory import MemoryBackend
from process_balancer.config.schema import settings_from
from process_balancer.ops.metrics import ProcessMetrics
from process_balancer.runtime.manager import Manager
from support.cli import free_port
from support.harness import Process, wait_until, write_config

JOB = {"class": "support.jobs:RecordingJob", "records": 4, "record_time": 0.025}


def get(port: int, path: str) -> tuple[int, str]:
    """(HTTP status, body); status 0 while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value."""
    status, body = get(port, "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((f"process_balancer_{name}", tuple(sorted(labels.items()))))


def answers(port: int, path: str, code: int) -> Callable[[], bool]:
    return lambda: get(port, path)[0] == code


def test_metrics_count_slots_iterations_records_errors_and_heartbeats(group_config, spawn) -> None:
    port = free_port()
    config = group_config(
        {"q": {**JOB, "workers": 2}, "bad": {"class": "support.jobs:FailingJob", "workers": 1}},
        metrics_port=port,
    )
    spawn(config, "a")

    def enough() -> dict[Any, float] | None:
        samples = scrape(port) if get(port, "/readyz")[0] == 200 else {}
        iterations = value(samples, "iterations_total", job="q") or 0
        errors = value(samples, "job_errors_total", job="bad") or 0
        return samples if iterations >= 4 and errors >= 1 else None

    samples = wait_until(enough, 20, 0.2, message="iterations and a job error")
    iterations = value(samples, "iterations_total", job="q")
    records = value(samples, "records_total", job="q")
    assert iterations is not None and records is not None
    # 4 records per iteration; an iteration stopped by a slot move may count fewer.
    assert 4 * iterations - 8 <= records <= 4 * (iterations + 2)
    assert value(samples, "slots_running", job="q") == 2
    assert value(samples, "lock_losses_total", job="q") == 0
    assert (value(samples, "worker_restarts_total", job="bad") or 0) >= 1
    count = value(samples, "iteration_duration_seconds_count", job="q")
    total = value(samples, "iteration_duration_seconds_sum", job="q")
    assert count is not None and total is not None and count >= iterations
    assert 0.09 < total / count < 1.0  # 4 records of 25 ms
    assert (value(samples, "heartbeat_duration_seconds_count") or 0) >= 1
    assert 0 <= (value(samples, "heartbeat_age_seconds") or 99) < 3
    assert value(samples, "unplaced_slots", job="q") == 0
    assert value(samples, "capacity") == 10
    assert (value(samples, "quiet"), value(samples, "stopping")) == (0, 0)
    info = [k for k in samples if k[0] == "process_balancer_process_info"]
    assert dict(info[0][1])["hostname"] == socket.gethostname()


def test_slots_no_process_has_room_for_are_reported_as_unplaced(group_config, spawn) -> None:
    port = free_port()
    config = group_config({"q": {**JOB, "workers": 3}}, max_threads=2, metrics_port=port)
    spawn(config, "a")
    wait_until(answers(port, "/readyz", 200), 15, message="ready")
    wait_until(
        lambda: value(scrape(port), "unplaced_slots", job="q") == 1, 10, message="1 unplaced"
    )


def test_probes_answer_200_when_joined_and_unknown_paths_404(group_config, spawn) -> None:
    port = free_port()
    spawn(group_config({"q": {**JOB, "workers": 1}}, metrics_port=port), "a")
    wait_until(answers(port, "/readyz", 200), 15, message="ready")
    assert get(port, "/healthz")[0] == 200
    status, body = get(port, "/nothing")
    assert status == 404 and "/metrics" in body


def test_a_stopping_process_is_not_ready_but_still_healthy(group_config, spawn, iteration_log):
    port = free_port()
    config = group_config(
        {"q": {**JOB, "workers": 1, "records": 10, "record_time": 30}},
        metrics_port=port,
        shutdown_timeout=60,
    )
    a = spawn(config, "a")
    wait_until(lambda: iteration_log.events(), 15, message="an iteration running")
    assert get(port, "/readyz")[0] == 200
    a.send(signal.SIGTERM)
    wait_until(answers(port, "/readyz", 503), 5, message="not ready while stopping")
    assert get(port, "/healthz")[0] == 200
    assert a.popen.poll() is None


def test_healthz_fails_once_heartbeats_fail_for_process_expiry_and_recovers(
    tmp_path: Path, private_redis, namespace, spawn
) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "pb.yml",
        backend=private_redis.url,
        namespace=namespace,
        jobs={},
        metrics_port=port,
    )
    proc: Process = spawn(config, "a")
    wait_until(answers(port, "/healthz", 200), 15, message="healthy")
    private_redis.send_signal(signal.SIGSTOP)
    try:
        wait_until(answers(port, "/healthz", 503), 6, message="unhealthy without heartbeats")
    finally:
        private_redis.send_signal(signal.SIGCONT)
    wait_until(answers(port, "/healthz", 200), 10, message="healthy again")
    assert proc.popen.poll() is None


def test_a_metrics_port_in_use_is_a_clear_startup_error(group_config, spawn) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = spawn(group_config({}, metrics_port=port), "a")
        assert proc.wait(20) == 2
    log = proc.log()
    assert f"cannot serve metrics on 127.0.0.1:{port}" in log
    assert "Traceback" not in log


def test_each_manager_has_its_own_registry(namespace: str) -> None:
    """Two managers in one interpreter do not clash, and before joining neither is ready."""
    url = f"memory://{namespace}"
    settings = settings_from(backend=url, namespace=namespace)
    managers = [Manager(settings, {}, MemoryBackend(url, namespace)) for _ in range(2)]
    for manager in managers:
        metrics = ProcessMetrics(manager)
        manager.observers.append(metrics)
        text = generate_latest(metrics.registry).decode()
        assert manager.identity in text
        assert all(other.identity not in text for other in managers if other is not manager)

        calls: list[str] = []
        app = metrics.wsgi_app()
        for path in ("/healthz", "/readyz"):
            environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
            app(environ, lambda status, headers, calls=calls: calls.append(status))
        assert calls == ["503 Service Unavailable"] * 2
        manager.backend.close()
