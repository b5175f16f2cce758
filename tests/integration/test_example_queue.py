"""The queue example (examples/queue/): its job class against a real PostgreSQL, and the whole
example run by two real ``process-balancer run`` processes.

Each test module run gets a database of its own, created on the server and dropped (with
FORCE) afterwards; each test starts from an empty ``queue_records`` table in it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from process_balancer import Client
from process_balancer.config.schema import settings_from
from support.harness import Process, wait_until, write_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "queue"
POSTGRES_URL = os.environ.get(
    "PB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _load_example_jobs() -> ModuleType:
    # A name of its own, so it cannot clash with any other module called `jobs`.
    spec = importlib.util.spec_from_file_location("queue_example_jobs", EXAMPLE / "jobs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example_jobs = _load_example_jobs()


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """URL of a database created for this module and dropped afterwards."""
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL is not reachable at {POSTGRES_URL}: {' '.join(str(exc).split())}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI requires it)")
        pytest.skip(reason)
    name = f"pbtest_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield urlunsplit(urlsplit(POSTGRES_URL)._replace(path=f"/{name}"))
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the test database, whose queue table exists and is empty."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute((EXAMPLE / "schema.sql").read_text())
        conn.execute("TRUNCATE queue_records RESTART IDENTITY")
        yield conn


@pytest.fixture
def make_job(database_url: str) -> Iterator[Callable[..., Any]]:
    """Build ``ProcessQueue`` instances as a runner would, holding a given fencing token."""
    made: list[Any] = []

    def make(*, worker_index: int = 0, fence: int = 5, **options: Any) -> Any:
        options = {"database_url": database_url, "batch_size": 3, "idle_sleep": 0.2, **options}
        job = example_jobs.ProcessQueue(
            job_id="process_queue", worker_index=worker_index, options=options
        )
        job.fencing_token = fence
        made.append(job)
        return job

    yield make
    for job in made:
        job.close()


def insert_rows(conn: psycopg.Connection[Any], count: int) -> None:
    conn.execute(
        "INSERT INTO queue_records (payload) SELECT 'payload ' || n FROM generate_series(1, %s) n",
        (count,),
    )


def row_state(conn: psycopg.Connection[Any], row_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(
            "SELECT status, lock_owner, lock_fence, processed_by, process_count, result "
            "FROM queue_records WHERE id = %s",
            (row_id,),
        ).fetchone()
    assert row is not None
    return row


def run_example(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- the job class, called directly -------------------------------------------------------------


def test_a_batch_is_claimed_in_id_order_processed_and_the_rest_released(
    db: psycopg.Connection[Any], make_job: Callable[..., Any]
) -> None:
    insert_rows(db, 5)
    job = make_job(batch_size=3)

    records = job.lock_records()
    job.process_record(records[0])
    job.process_record(records[1])
    job.unlock_records()

    assert [record.id for record in records] == [1, 2, 3]
    done = row_state(db, 1)
    assert done["status"] == "done"
    assert done["lock_owner"] is None
    assert done["processed_by"] == 5
    assert done["process_count"] == 1
    assert done["result"] == hashlib.sha256(b"payload 1").hexdigest()
    released = row_state(db, 3)
    assert (released["status"], released["lock_owner"], released["lock_fence"]) == (
        "queued",
        None,
        None,
    )


def test_a_write_carrying_an_older_fencing_token_does_not_land(
    db: psycopg.Connection[Any], make_job: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a holder of worker 0 (token 5) that claimed rows, then stalled while its worker
    # lock moved to a new holder of worker 0 (token 6), which took its rows over
    insert_rows(db, 3)
    stale = make_job(fence=5)
    stale_records = stale.lock_records()
    current = make_job(fence=6)
    current_records = current.lock_records()
    assert current_records == stale_records

    # When the stale holder wakes up and marks a row done
    with caplog.at_level(logging.WARNING):
        stale.process_record(stale_records[0])

    # Then the row is untouched and still belongs to the new holder, who can finish it
    untouched = row_state(db, 1)
    assert untouched["status"] == "queued"
    assert untouched["lock_fence"] == 6
    assert untouched["process_count"] == 0
    assert untouched["processed_by"] is None
    assert "row 1 was taken over by a newer holder" in caplog.text
    current.process_record(current_records[0])
    assert row_state(db, 1)["processed_by"] == 6
    assert row_state(db, 1)["process_count"] == 1


def test_unlock_records_releases_only_the_rows_this_holder_claimed(
    db: psycopg.Connection[Any], make_job: Callable[..., Any]
) -> None:
    insert_rows(db, 6)
    stale = make_job(worker_index=0, fence=5)
    stale.lock_records()  # rows 1-3
    current = make_job(worker_index=0, fence=6)
    current.lock_records()  # takes rows 1-3 over
    other = make_job(worker_index=1, fence=5)
    other.lock_records()  # rows 4-6

    stale.unlock_records()

    owners = db.execute("SELECT lock_owner, lock_fence FROM queue_records ORDER BY id").fetchall()
    assert owners == [(0, 6), (0, 6), (0, 6), (1, 5), (1, 5), (1, 5)]


def test_rows_left_claimed_by_a_dead_holder_go_to_the_next_holder_of_its_index(
    db: psycopg.Connection[Any], make_job: Callable[..., Any]
) -> None:
    # Given a holder that claimed rows and died without unlock_records
    insert_rows(db, 4)
    dead = make_job(fence=5, batch_size=2)
    dead.lock_records()
    dead.close()

    records = make_job(fence=9, batch_size=3).lock_records()

    assert [record.id for record in records] == [1, 2, 3]
    assert [row_state(db, n)["lock_fence"] for n in (1, 2, 3)] == [9, 9, 9]


def test_an_empty_queue_makes_the_worker_wait_idle_sleep(
    db: psycopg.Connection[Any], make_job: Callable[..., Any]
) -> None:
    job = make_job(idle_sleep=0.2)
    waits: list[float] = []
    job.status_sleep = waits.append

    assert job.lock_records() == []
    assert waits == [0.2]


def test_a_dropped_connection_is_replaced_and_the_claim_retried(
    db: psycopg.Connection[Any], make_job: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    insert_rows(db, 2)
    job = make_job(batch_size=1)
    job.process_record(job.lock_records()[0])
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'process_balancer process_queue:0'"
    )

    with caplog.at_level(logging.WARNING):
        records = job.lock_records()

    assert [record.id for record in records] == [2]
    assert "lost the database connection" in caplog.text


# -- the example, run by two real processes ------------------------------------------------------


def _running_workers(client: Client, runners: list[Process]) -> list[int]:
    for runner in runners:
        if runner.popen.poll() is not None:
            pytest.fail(f"runner {runner.name} exited early:\n{runner.log()}")
    counts = []
    for member in client.processes():
        running = member.info.get("running") or {}
        counts.append(len(running.get("process_queue", [])))
    return sorted(counts)


def _drained(conn: psycopg.Connection[Any], expected: int) -> bool:
    row = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE status = 'done' AND lock_owner IS NULL) "
        "FROM queue_records"
    ).fetchone()
    return row == (expected, expected)


def test_two_runner_processes_drain_the_queue_processing_each_row_once(
    db: psycopg.Connection[Any],
    database_url: str,
    redis_url: str,
    namespace: str,
    spawn: Callable[..., Process],
    tmp_path: Path,
) -> None:
    # Given two runners of the example's job, 4 workers spread over them, and no rows yet
    config = write_config(
        tmp_path / "queue.yml",
        backend=redis_url,
        namespace=namespace,
        max_threads=4,
        shutdown_timeout=30,
        jobs={
            "process_queue": {
                "class": "jobs:ProcessQueue",
                "workers": 4,
                "batch_size": 200,
                "idle_sleep": 0.2,
                "database_url": database_url,
            }
        },
    )
    runners = [spawn(config, name, "-r", str(EXAMPLE / "jobs.py")) for name in ("a", "b")]
    client = Client(settings_from(backend=redis_url, namespace=namespace))
    try:
        wait_until(
            lambda: _running_workers(client, runners) == [2, 2],
            timeout=30,
            interval=0.1,
            message="both runners to run two workers each",
        )
    finally:
        client.close()

    # When 3,000 rows are queued
    fill = run_example("fill.py", "--rows", "3000", "--database-url", database_url)
    assert fill.returncode == 0, fill.stderr

    # Then they are drained, every row done by exactly one write, by both processes
    wait_until(lambda: _drained(db, 3000), timeout=60, interval=0.2, message="queue drained")
    rows = db.execute(
        "SELECT payload, result, process_count, lock_owner, processed_pid FROM queue_records"
    ).fetchall()
    assert len(rows) == 3000
    assert all(count == 1 for _, _, count, _, _ in rows)
    assert all(owner is None for _, _, _, owner, _ in rows)
    assert all(
        result == hashlib.sha256(payload.encode()).hexdigest() for payload, result, *_ in rows
    )
    per_process = Counter(pid for *_, pid in rows)
    assert set(per_process) == {runner.pid for runner in runners}, per_process

    # And the example's progress script agrees
    progress = run_example("progress.py", "--database-url", database_url)
    assert progress.returncode == 0, progress.stdout + progress.stderr
    assert "verified: all 3,000 rows done" in progress.stdout

    # And both runners stop cleanly on SIGTERM
    for runner in runners:
        runner.send(signal.SIGTERM)
    for runner in runners:
        assert runner.wait(40) == 0, runner.log()
        assert "Traceback" not in runner.log()
        assert "taken over" not in runner.log()


def test_a_paused_holder_lands_no_write_after_a_peer_took_its_slot_over(
    db: psycopg.Connection[Any],
    database_url: str,
    redis_url: str,
    namespace: str,
    spawn: Callable[..., Process],
    tmp_path: Path,
) -> None:
    """Given two runners draining slowly (50 ms of work per row), when one is SIGSTOPped for
    longer than both process_expiry and the worker lock TTL, a peer takes its slot over with a
    higher fencing token; when it is SIGCONTed mid-row its write carries the old token and is
    refused, so every row is still done exactly once."""
    insert_rows(db, 400)
    config = write_config(
        tmp_path / "queue.yml",
        backend=redis_url,
        namespace=namespace,
        jobs={
            "process_queue": {
                "class": "jobs:ProcessQueue",
                "workers": 2,
                "batch_size": 20,
                "idle_sleep": 0.2,
                "work_time": 0.05,
                "runtime_lock_timeout": 4,
                "database_url": database_url,
            }
        },
    )
    runners = [spawn(config, name, "-r", str(EXAMPLE / "jobs.py")) for name in ("a", "b")]
    paused, peer = runners

    def done_by(pid: int) -> int:
        row = db.execute(
            "SELECT count(*) FROM queue_records WHERE processed_pid = %s", (pid,)
        ).fetchone()
        return int(row[0]) if row else 0

    wait_until(
        lambda: done_by(paused.pid) > 10 and done_by(peer.pid) > 10,
        30,
        message="both runners processing rows",
    )
    paused.send(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        before = done_by(peer.pid)
        # The peer runs both slots: it must get well past its own share's pace.
        wait_until(lambda: done_by(peer.pid) > before + 40, 20, message="peer takes over")
        # Stay paused past the 4 s worker lock TTL as well.
        time.sleep(max(0.0, stopped_at + 4.5 - time.monotonic()))
    finally:
        paused.send(signal.SIGCONT)

    wait_until(lambda: _drained(db, 400), timeout=60, interval=0.2, message="queue drained")
    counts = db.execute("SELECT process_count, count(*) FROM queue_records GROUP BY 1").fetchall()
    assert counts == [(1, 400)], counts
    wait_until(
        lambda: "taken over by a newer holder" in paused.log(),
        10,
        message="the paused runner's stale write to be refused",
    )
    for runner in runners:
        runner.send(signal.SIGTERM)
    for runner in runners:
        assert runner.wait(40) == 0, runner.log()


def test_the_postgresql_only_config_drains_the_queue_with_advisory_locks(
    db: psycopg.Connection[Any],
    database_url: str,
    spawn: Callable[..., Process],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given two runners of examples/queue/process_balancer.postgres.yml, whose backend and queue
    # are both DATABASE_URL, and no rows yet
    monkeypatch.setenv("DATABASE_URL", database_url)
    config = EXAMPLE / "process_balancer.postgres.yml"
    runners = [spawn(config, name, "-r", str(EXAMPLE / "jobs.py")) for name in ("a", "b")]
    client = Client(settings_from(backend=database_url, namespace="queue_example"))
    try:
        wait_until(
            lambda: _running_workers(client, runners) == [2, 2],
            timeout=30,
            interval=0.1,
            message="both runners to run two workers each",
        )
    finally:
        client.close()

    # When 3,000 rows are queued
    fill = run_example("fill.py", "--rows", "3000", "--database-url", database_url)
    assert fill.returncode == 0, fill.stderr

    # Then they are drained, every row done by exactly one write, by both processes
    wait_until(lambda: _drained(db, 3000), timeout=60, interval=0.2, message="queue drained")
    rows = db.execute("SELECT process_count, processed_pid FROM queue_records").fetchall()
    assert all(count == 1 for count, _ in rows)
    assert {pid for _, pid in rows} == {runner.pid for runner in runners}
    # under advisory locks, whose fencing counters live beside the backend's tables
    fences = db.execute(
        "SELECT count(*) FROM process_balancer.pb_advisory_fences WHERE fence > 0"
    ).fetchone()
    assert fences == (4,)

    # And both runners stop cleanly on SIGTERM
    for runner in runners:
        runner.send(signal.SIGTERM)
    for runner in runners:
        assert runner.wait(40) == 0, runner.log()
        assert "Traceback" not in runner.log()
