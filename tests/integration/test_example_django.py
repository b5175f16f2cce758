"""The Django example (examples/django_project/) run for real: ``python manage.py
process_balancer run`` processes draining its Task table on PostgreSQL, coordinated
through Redis.

Each test gets a database of its own, migrated by the example's ``manage.py migrate`` and
dropped (with FORCE) afterwards.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

import process_balancer
from support.harness import wait_until

pytest.importorskip("django")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "django_project"
SOURCE = Path(process_balancer.__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get(
    "PB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
APPLICATION_NAME = "process_balancer django example"


@pytest.fixture
def database_url() -> Iterator[str]:
    """URL of a database created for this test and dropped afterwards."""
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL is not reachable at {POSTGRES_URL}: {' '.join(str(exc).split())}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI requires it)")
        pytest.skip(reason)
    name = f"pbtest_django_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield urlunsplit(urlsplit(POSTGRES_URL)._replace(path=f"/{name}"))
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def example_env(database_url: str, redis_url: str, namespace: str) -> dict[str, str]:
    """The environment the example's manage.py runs in: this checkout's package, the test's
    database, Redis namespace and a little work per task."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SOURCE), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": database_url,
        "PB_BACKEND": redis_url,
        "PB_NAMESPACE": namespace,
        "PB_WORK_TIME": "0.005",
        "COLUMNS": "200",
    }


@pytest.fixture
def manage(example_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=EXAMPLE,
            env=example_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    return run


class Runner:
    """One ``python manage.py process_balancer run`` process and its log."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in close()
        self.popen = subprocess.Popen(
            [sys.executable, "manage.py", "process_balancer", "run"],
            cwd=EXAMPLE,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text()

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self._log.close()


@pytest.fixture
def start_runner(example_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[str], Runner]]:
    started: list[Runner] = []

    def start(name: str) -> Runner:
        runner = Runner(name, example_env, tmp_path)
        started.append(runner)
        return runner

    yield start
    for runner in started:
        runner.close()


def counts(db: psycopg.Connection[Any]) -> tuple[int, int, int]:
    """(tasks, tasks done and unclaimed, runs)."""
    row = db.execute(
        "SELECT (SELECT count(*) FROM tasks_task), "
        "(SELECT count(*) FROM tasks_task WHERE status = 'done' AND lock_owner IS NULL), "
        "(SELECT count(*) FROM tasks_taskrun)"
    ).fetchone()
    assert row is not None
    return row


def overlapping_holders(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Pairs of holders (pid, fencing token) of one worker index whose runs overlap in time,
    or whose tokens go backwards: both would mean an index ran in two places at once."""
    holders: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for index, pid, fence, first, last in db.execute(
        "SELECT worker_index, pid, fencing_token, min(started_at), max(finished_at) "
        "FROM tasks_taskrun GROUP BY 1, 2, 3 ORDER BY 1, 4"
    ):
        holders[index].append((pid, fence, first, last))
    wrong = []
    for index, spans in holders.items():
        for before, after in itertools.pairwise(spans):
            if after[2] < before[3] or after[1] <= before[1]:
                wrong.append((index, before, after))
    return wrong


def test_two_manage_py_runners_drain_the_queue_once_and_survive_dropped_connections(
    database_url: str,
    manage: Callable[..., subprocess.CompletedProcess[str]],
    start_runner: Callable[[str], Runner],
) -> None:
    # Given the example's database, migrated, and two runners sharing its 4 workers
    manage("migrate", "--no-input")
    runners = [start_runner("a"), start_runner("b")]

    def running() -> list[int]:
        for runner in runners:
            if runner.popen.poll() is not None:
                pytest.fail(f"a runner exited early:\n{runner.log()}")
        status = json.loads(manage("process_balancer", "status", "--json").stdout)
        return sorted(
            len((member.get("running") or {}).get("process_tasks", []))
            for member in status["processes"]
        )

    wait_until(lambda: running() == [2, 2], 30, 0.5, "two workers on each runner")

    with psycopg.connect(database_url, autocommit=True) as db:
        # When 800 tasks are queued
        manage("enqueue_tasks", "800")

        # Then each is done exactly once, by both processes, no worker index ever running
        # on two holders at once
        wait_until(lambda: counts(db) == (800, 800, 800), 60, 0.2, "800 tasks done")
        per_task = db.execute("SELECT count(*) FROM tasks_taskrun GROUP BY task_id").fetchall()
        assert {n for (n,) in per_task} == {1}
        pids = {pid for (pid,) in db.execute("SELECT DISTINCT pid FROM tasks_taskrun")}
        assert pids == {runner.pid for runner in runners}
        assert overlapping_holders(db) == []

        # When the server drops every connection of the idle workers between iterations
        # (their connections are persistent: CONN_MAX_AGE is 60 s)
        dropped = [
            pid
            for (pid,) in db.execute(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = %s "
                "AND state = 'idle'",
                (APPLICATION_NAME,),
            )
        ]
        assert dropped, "no idle worker connection to drop"
        db.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (dropped,))

        # Then the workers reconnect at their next iteration and 200 more tasks are done
        # exactly once, without a failed iteration
        manage("enqueue_tasks", "200")
        wait_until(lambda: counts(db) == (1000, 1000, 1000), 60, 0.2, "1000 tasks done")
        per_task = db.execute("SELECT count(*) FROM tasks_taskrun GROUP BY task_id").fetchall()
        assert {n for (n,) in per_task} == {1}
        assert overlapping_holders(db) == []
        live = db.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            (APPLICATION_NAME,),
        ).fetchall()
        assert live
        assert not {pid for (pid,) in live} & set(dropped)

    # And both runners stop cleanly on SIGTERM
    for runner in runners:
        runner.popen.send_signal(signal.SIGTERM)
    for runner in runners:
        assert runner.popen.wait(40) == 0, runner.log()
        log = runner.log()
        assert "Traceback" not in log, log
        assert "taken over" not in log, log
