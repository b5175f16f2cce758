"""The zero-service quickstart (examples/quickstart/): its config as shipped, and the whole
example run by two real ``process-balancer run`` processes started from the repository root."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import yaml

from process_balancer.config.loader import add_cwd_to_path
from process_balancer.config.schema import load_config, resolve_job_classes
from support.harness import wait_until

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "quickstart"
PROGRESS = re.compile(r"quickstart: (worker \d+: [\d,]+ sent \| )+queue: [\d,]+ left$")


def test_the_shipped_config_names_sqlite_and_loads_from_the_repository_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # must not matter
    add_cwd_to_path()
    settings = load_config("examples/quickstart/process_balancer.yml")
    assert settings.backend == "sqlite:///examples/quickstart/coordination.sqlite3"
    assert resolve_job_classes(settings)["send_emails"].__name__ == "SendEmails"


@pytest.fixture
def runners(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_two_processes_split_the_workers_and_send_every_email_once(
    tmp_path: Path, runners: list[subprocess.Popen[str]]
) -> None:
    """Given the quickstart config with its files in a temporary directory, when a second
    process joins the first, then both send emails, the queue drains, every email went out
    exactly once and each process logged its progress line."""
    config = yaml.safe_load((EXAMPLE / "process_balancer.yml").read_text())
    config["global"]["backend"] = f"sqlite:///{tmp_path / 'coordination.sqlite3'}"
    job = config["jobs"]["send_emails"]
    queue_path = tmp_path / "queue.sqlite3"
    job.update(queue_db=str(queue_path), seed=1500, send_time=[0.01, 0.02], report_every=0.5)
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

    def sent_by() -> dict[int, int]:
        if not queue_path.exists():
            return {}
        with closing(sqlite3.connect(str(queue_path))) as conn:
            try:
                rows = conn.execute("SELECT pid, count(*) FROM deliveries GROUP BY pid")
                return dict(rows.fetchall())
            except sqlite3.OperationalError:
                return {}

    a = start("a")
    wait_until(lambda: sent_by().get(a.pid, 0) > 50, 30, message="a sending")
    b = start("b")
    wait_until(lambda: sent_by().get(b.pid, 0) > 0, 30, message="b sending")

    def left() -> int:
        with closing(sqlite3.connect(str(queue_path))) as conn:
            return int(
                conn.execute("SELECT count(*) FROM emails WHERE status = 'queued'").fetchone()[0]
            )

    wait_until(lambda: left() == 0, 60, message="the queue to drain")
    wait_until(
        lambda: any("queue: drained" in (tmp_path / f"{n}.log").read_text() for n in "ab"),
        10,
        message="a process to say the queue is drained",
    )
    for proc in (a, b):
        proc.send_signal(signal.SIGTERM)
    assert [proc.wait(20) for proc in (a, b)] == [0, 0]

    with closing(sqlite3.connect(str(queue_path))) as conn:
        emails = conn.execute("SELECT count(*) FROM emails WHERE status = 'sent'").fetchone()[0]
        twice = conn.execute(
            "SELECT email_id, count(*) FROM deliveries GROUP BY email_id HAVING count(*) > 1"
        ).fetchall()
        deliveries = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    assert emails == deliveries == 1500
    assert twice == []
    assert set(sent_by()) == {a.pid, b.pid}

    a_log = (tmp_path / "a.log").read_text()
    b_log = (tmp_path / "b.log").read_text()
    assert "queued 1,500 emails" in a_log and "queued" not in b_log
    for log in (a_log, b_log):
        assert "single-host mode" in log
        assert any(PROGRESS.search(line) for line in log.splitlines()), log
    # b took two of the four workers from a, and the logs say which.
    assert re.search(r"stopping job send_emails worker \d: slot moved", a_log)
    assert len(set(re.findall(r"starting job send_emails worker (\d)", b_log))) == 2
