"""Running the real ``process-balancer`` command in a subprocess, and free loopback ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

from support.harness import TESTS_DIR


def pb(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``python -m process_balancer ARGS`` with its exit code, stdout and stderr; tables are
    laid out 200 columns wide whatever the terminal running the tests."""
    return subprocess.run(
        [sys.executable, "-m", "process_balancer", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(TESTS_DIR),
        env={**os.environ, "COLUMNS": "200"},
    )


def status_json(*args: str) -> dict[str, Any]:
    result = pb("status", "--json", *args)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def free_port() -> int:
    """A loopback TCP port nothing listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
