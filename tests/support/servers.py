"""A redis-server of a test's own that the test can stall, kill, restart empty or re-clock."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

SUPPORT_DIR = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@functools.cache
def clockshift_library() -> Path:
    """Build (once per run) the preload library that shifts a process's wall clock."""
    source = SUPPORT_DIR / "clockshift.c"
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("stepping a server's clock needs a C compiler: apt-get install gcc")
    # One build per version of the source, shared by runs (and by concurrent ones: each
    # compiles to a file of its own and renames it into place).
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    out = Path(tempfile.gettempdir()) / f"pb-clockshift-{digest}.so"
    if not out.exists():
        partial = out.with_name(f"{out.name}.{os.getpid()}")
        subprocess.run(
            [compiler, "-shared", "-fPIC", "-O2", "-o", str(partial), str(source)],
            check=True,
            capture_output=True,
        )
        partial.replace(out)
    return out


class RedisServer:
    """``redis-server`` on a free loopback port, keeping nothing on disk.

    ``pause()``/``resume()`` stall it (SIGSTOP/SIGCONT), ``kill()`` ends it, ``restart_empty()``
    starts a fresh one with no data on the same port, ``restart_from_snapshot()`` one with the
    data of the last ``save_snapshot()``, and with ``clock=True``
    ``step_clock(+20)`` moves its wall clock (the one ``TIME``, Lua and key expiry use).
    """

    def __init__(self, workdir: Path, *, clock: bool = False, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.clock_file: Path | None = workdir / f"redis-{self.port}.clock" if clock else None
        self.popen: subprocess.Popen[bytes] | None = None
        self.paused = False
        #: Written only by :meth:`save_snapshot`, loaded by the next start.
        self.snapshot_file = workdir / f"redis-{self.port}.rdb"
        self.start()

    def start(self) -> None:
        env = dict(os.environ)
        if self.clock_file is not None:
            if not self.clock_file.exists():
                self.clock_file.write_text("0\n")
            env["LD_PRELOAD"] = str(clockshift_library())
            env["PB_CLOCK_OFFSET_FILE"] = str(self.clock_file)
        log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115
        try:
            self.popen = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.workdir),
                    "--dbfilename",
                    self.snapshot_file.name,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        finally:
            log.close()
        self.paused = False
        self._wait_ready()

    def _wait_ready(self, timeout: float = 10.0) -> None:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.RedisError:
                    if time.monotonic() > deadline or (
                        self.popen is not None and self.popen.poll() is not None
                    ):
                        raise RuntimeError(
                            f"redis-server on port {self.port} did not start; see "
                            f"{self.workdir}/redis-{self.port}.log"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, **kwargs)

    def pause(self) -> None:
        """SIGSTOP: the server holds every connection and answers nothing."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        """SIGKILL: every connection is reset and every key is gone."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            if self.paused:
                self.popen.send_signal(signal.SIGCONT)
        self.popen.wait(10)
        self.popen = None
        self.paused = False

    def restart_empty(self) -> None:
        """Kill the server and start a new one with no data on the same port."""
        self.kill()
        self.snapshot_file.unlink(missing_ok=True)
        self.start()

    def save_snapshot(self) -> None:
        """Write the server's data to its snapshot file now (``SAVE``)."""
        client = self.client(socket_timeout=5)
        try:
            client.save()
        finally:
            client.close()

    def restart_from_snapshot(self) -> None:
        """Kill the server and start a new one that loads the last :meth:`save_snapshot`:
        a restart from an older backup, or a failover to a replica that lagged behind."""
        self.kill()
        self.start()

    def step_clock(self, seconds: float) -> None:
        """Set the server's wall clock to ``seconds`` ahead of the host's (negative: behind)."""
        if self.clock_file is None:
            raise RuntimeError("this server was started without clock=True")
        self.clock_file.write_text(f"{seconds:+f}\n")
        time.sleep(0.05)  # the server re-reads the file at most every 10 ms

    def server_time(self) -> float:
        client = self.client(socket_timeout=2)
        try:
            seconds, micros = client.time()
        finally:
            client.close()
        return float(seconds) + micros / 1e6

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.kill()
