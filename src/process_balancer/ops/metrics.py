"""Prometheus metrics of one process, served with the Kubernetes probes on ``metrics_port``.

Counting stays off the per-record path: the workers already count records, iterations and lost
locks in plain attributes, and a custom collector reads them (with the totals of exited
workers, kept by the supervisor) when Prometheus scrapes. Only the two histograms are fed as
things happen, once per iteration and once per heartbeat.

Every process has its own :class:`~prometheus_client.CollectorRegistry`, so several managers
can run in one interpreter (tests, embedding programs) without clashing.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import BackendError
from ..errors import MetricsServerError as MetricsServerError

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from ..runtime.observer import ProcessView

__all__ = ["PREFIX", "MetricsServerError", "ProcessMetrics"]

logger = logging.getLogger(__name__)

PREFIX = "process_balancer"

#: Iterations range from milliseconds (an empty poll) to hours (a long drain).
ITERATION_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: A heartbeat is one Redis round trip; anything near a second is trouble.
HEARTBEAT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class _HistogramChild(Protocol):
    def observe(self, amount: float) -> None: ...


class ProcessMetrics:
    """The metrics registry of one running process, and the HTTP server answering
    ``/metrics``, ``/healthz`` and ``/readyz``: an observer of the process (see
    ``runtime/observer.py``), given to the manager by ``process-balancer run`` when
    ``metrics_port`` is set. ``port`` 0 picks a free one."""

    def __init__(self, manager: ProcessView, host: str = "127.0.0.1", port: int = 0) -> None:
        self.manager = manager
        self.host = host
        self.requested_port = port
        self.registry = CollectorRegistry()
        self.iteration_seconds = Histogram(
            f"{PREFIX}_iteration_duration_seconds",
            "Duration of iterations that held the worker lock, from lock_records to release.",
            ["job"],
            buckets=ITERATION_BUCKETS,
            registry=self.registry,
        )
        self.heartbeat_seconds = Histogram(
            f"{PREFIX}_heartbeat_duration_seconds",
            "Round-trip time of successful heartbeats to the backend.",
            buckets=HEARTBEAT_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_ProcessCollector(manager))
        self._by_job: dict[str, _HistogramChild] = {}
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def observe_iteration(self, job_id: str, seconds: float) -> None:
        child = self._by_job.get(job_id)
        if child is None:
            child = self._by_job[job_id] = self.iteration_seconds.labels(job_id)
        child.observe(seconds)

    def observe_heartbeat(self, seconds: float) -> None:
        self.heartbeat_seconds.observe(seconds)

    # -- the HTTP server ---------------------------------------------------------------------

    def start(self) -> None:
        self.serve(self.host, self.requested_port)

    def serve(self, host: str, port: int) -> None:
        """Answer ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` in a daemon thread."""
        try:
            server = make_server(
                host,
                port,
                self.wsgi_app(),
                server_class=_server_class(host, port),
                handler_class=_QuietHandler,
            )
        except OSError as exc:
            raise MetricsServerError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; choose another "
                "metrics_port or stop whatever listens there"
            ) from None
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="pb-metrics", kwargs={"poll_interval": 0.2}
        )
        self._thread.daemon = True
        self._thread.start()
        logger.info(
            "serving /metrics, /healthz and /readyz on http://%s:%d", host, server.server_port
        )

    @property
    def port(self) -> int | None:
        return self._server.server_port if self._server is not None else None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wsgi_app(self) -> Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]:
        metrics_app = make_wsgi_app(self.registry)
        manager = self.manager

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            path = environ.get("PATH_INFO") or "/"
            if path == "/metrics":
                return metrics_app(environ, start_response)  # type: ignore[no-any-return]
            if path == "/healthz":
                return _probe(start_response, healthy(manager), _health_detail(manager))
            if path == "/readyz":
                return _probe(start_response, ready(manager), _ready_detail(manager))
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found; try /metrics, /healthz or /readyz\n"]

        return app


def heartbeat_age(manager: ProcessView) -> float | None:
    """Seconds since the manager's last successful heartbeat was sent; None before the first
    one and after it left the group."""
    valid_until = manager.membership.valid_until
    if valid_until <= 0:
        return None
    return max(0.0, time.monotonic() - (valid_until - manager.settings.process_expiry))


def healthy(manager: ProcessView) -> bool:
    """Alive: the last successful heartbeat is younger than ``process_expiry``.

    The membership deadline is the send time of the last successful heartbeat plus
    ``process_expiry``, so this is exactly "that heartbeat is younger than the expiry".
    """
    return time.monotonic() < manager.membership.valid_until


def ready(manager: ProcessView) -> bool:
    """Joined the group and not stopping."""
    return manager.joined and not manager.stopping


def _health_detail(manager: ProcessView) -> dict[str, Any]:
    return {
        "identity": manager.identity,
        "heartbeat_age": heartbeat_age(manager),
        "process_expiry": manager.settings.process_expiry,
    }


def _ready_detail(manager: ProcessView) -> dict[str, Any]:
    return {"identity": manager.identity, "joined": manager.joined, "stopping": manager.stopping}


def _probe(start_response: StartResponse, ok: bool, detail: dict[str, Any]) -> list[bytes]:
    body = json.dumps({"status": "ok" if ok else "failing", **detail}).encode() + b"\n"
    status = "200 OK" if ok else "503 Service Unavailable"
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


class _QuietHandler(WSGIRequestHandler):
    """No access log: a scrape every few seconds would drown the process's own log."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _server_class(host: str, port: int) -> type[WSGIServer]:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except OSError:
        family = socket.AF_INET

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = family

    return Server


# -- scrape-time collector ---------------------------------------------------------------------


class _ProcessCollector(Collector):
    """Reads the manager's counters when Prometheus scrapes."""

    def __init__(self, manager: ProcessView) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        manager = self.manager
        per_job: dict[str, list[int]] = {job_id: [0] * 8 for job_id in manager.job_ids}
        for (job_id, _index), c in manager.supervisor.counters().items():
            totals = per_job.setdefault(job_id, [0] * 8)
            values = (
                int(c.running),
                c.iterations,
                c.records,
                c.errors,
                c.lock_losses,
                c.restarts,
                int(c.overdue),
                c.overruns,
            )
            for i, value in enumerate(values):
                totals[i] += value
        families: list[GaugeMetricFamily | CounterMetricFamily] = [
            GaugeMetricFamily(
                f"{PREFIX}_slots_running", "Worker slots running in this process.", labels=["job"]
            ),
            CounterMetricFamily(
                f"{PREFIX}_iterations", "Iterations completed in this process.", labels=["job"]
            ),
            CounterMetricFamily(
                f"{PREFIX}_records", "Records processed (counted per iteration).", labels=["job"]
            ),
            CounterMetricFamily(
                f"{PREFIX}_job_errors", "Worker failures: the job raised.", labels=["job"]
            ),
            CounterMetricFamily(
                f"{PREFIX}_lock_losses", "Iterations stopped by a lost worker lock.", labels=["job"]
            ),
            CounterMetricFamily(
                f"{PREFIX}_worker_restarts",
                "Workers started again after a failure or status_abort().",
                labels=["job"],
            ),
            GaugeMetricFamily(
                f"{PREFIX}_slots_overdue",
                "Slots whose running iteration is past the job's max_iteration_time.",
                labels=["job"],
            ),
            CounterMetricFamily(
                f"{PREFIX}_iteration_overruns",
                "Iterations that ran longer than max_iteration_time (process kind: killed).",
                labels=["job"],
            ),
        ]
        for job_id, totals in sorted(per_job.items()):
            for family, value in zip(families, totals, strict=True):
                family.add_metric([job_id], value)
        yield from families
        yield from self._process_state()
        yield from self._event_loop()
        yield from self._unplaced()

    def _event_loop(self) -> Iterator[Metric]:
        """The asyncio workers' event loop, once the process runs one."""
        loop = self.manager.supervisor.shared.describe().get("event_loop")
        if not loop:
            return
        yield GaugeMetricFamily(
            f"{PREFIX}_event_loop_lag_seconds",
            "Largest lateness of the asyncio workers' event loop in the last 10 s: time every "
            "asyncio slot waited because a job did not yield (a blocking call).",
            value=loop["lag"],
        )
        yield CounterMetricFamily(
            f"{PREFIX}_event_loop_stalls",
            "Times the asyncio workers' event loop was blocked longer than its warning "
            "threshold (each one is logged with the slot that blocked it).",
            value=loop["stalls"],
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_event_loop_slots",
            "Asyncio slots running on the event loop.",
            value=loop["slots"],
        )

    def _process_state(self) -> Iterator[Metric]:
        manager = self.manager
        info = GaugeMetricFamily(
            f"{PREFIX}_process_info",
            "Always 1; labels identify this process.",
            labels=["identity", "namespace", "hostname"],
        )
        info.add_metric([manager.identity, manager.settings.namespace, socket.gethostname()], 1)
        yield info
        yield GaugeMetricFamily(
            f"{PREFIX}_capacity",
            "Worker slots this process may run (max_threads).",
            value=manager.settings.max_threads,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_quiet", "1 while the process is quiet.", value=int(manager.quiet)
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_stopping", "1 while the process is stopping.", value=int(manager.stopping)
        )
        age = heartbeat_age(manager)
        if age is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_heartbeat_age_seconds",
                "Seconds since the last successful heartbeat was sent.",
                value=age,
            )

    def _unplaced(self) -> Iterator[Metric]:
        try:
            unplaced = self.manager.backend.unplaced()
        except BackendError as exc:
            logger.debug("unplaced slots left out of this scrape: %s", exc)
            return
        family = GaugeMetricFamily(
            f"{PREFIX}_unplaced_slots",
            "Slots of the group that no live process has room for (the same on every process).",
            labels=["job"],
        )
        jobs = set(self.manager.job_ids) | set(unplaced)
        for job_id in sorted(jobs):
            family.add_metric([job_id], len(unplaced.get(job_id, ())))
        yield family
