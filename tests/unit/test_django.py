"""The Django integration without a database server: DjangoJob's iteration context closes
stale connections before and after every iteration (also after an exception), on the thread
that owns them, and the management command hands its arguments to the CLI.

Django is configured once for this test process, with a SQLite database file of its own.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402

if not settings.configured:
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(Path(tempfile.mkdtemp(prefix="pb-django-")) / "db.sqlite3"),
                "CONN_MAX_AGE": 60,
            }
        },
        INSTALLED_APPS=["process_balancer.contrib.django"],
        PROCESS_BALANCER_CONFIG="/srv/app/process_balancer.yml",
        USE_TZ=True,
    )
    django.setup()

from django import db  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from process_balancer.contrib.django import (  # noqa: E402
    AsyncDjangoJob,
    DjangoJob,
    fresh_connections,
    fresh_connections_async,
)
from process_balancer.contrib.django.management.commands.process_balancer import (  # noqa: E402
    cli_arguments,
)
from process_balancer.locks import LockContext, SimpleRedisLock  # noqa: E402
from process_balancer.runtime.wakeups import Notifier  # noqa: E402
from process_balancer.runtime.workers.asyncio_worker import AsyncWorker  # noqa: E402
from process_balancer.runtime.workers.base import Worker, WorkerSpec  # noqa: E402
from process_balancer.runtime.workers.thread import ThreadWorker  # noqa: E402
from support.workers import IDENTITY  # noqa: E402


@pytest.fixture
def closes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``close_old_connections`` replaced by a recorder of the calls and their threads
    (the real one is kept and called too)."""
    calls: list[str] = []
    real = db.close_old_connections

    def record(**kwargs: Any) -> None:
        calls.append(f"close on {threading.current_thread().name}")
        real(**kwargs)

    monkeypatch.setattr(db, "close_old_connections", record)
    return calls


@pytest.fixture
def fresh_connection() -> Iterator[None]:
    connection.close()
    yield
    connection.close()


def job(job_class: type[Any] = DjangoJob) -> Any:
    return job_class(job_id="django", worker_index=0)


def test_connections_are_closed_before_and_after_an_iteration(closes: list[str]) -> None:
    with fresh_connections(job()):
        closes.append("iteration")

    here = threading.current_thread().name
    assert closes == [f"close on {here}", "iteration", f"close on {here}"]


def test_connections_are_closed_after_an_iteration_that_raised(closes: list[str]) -> None:
    with pytest.raises(RuntimeError, match="boom"), fresh_connections(job()):
        raise RuntimeError("boom")

    assert len(closes) == 2


def test_a_connection_past_conn_max_age_is_replaced_before_the_iteration(
    fresh_connection: None,
) -> None:
    connection.ensure_connection()
    old = connection.connection
    connection.close_at = time.monotonic() - 1  # as if CONN_MAX_AGE had passed since

    with fresh_connections(job()):
        assert connection.connection is None
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert connection.connection is not old


def test_a_connection_left_outside_autocommit_is_closed_after_the_iteration(
    fresh_connection: None,
) -> None:
    with fresh_connections(job()):
        transaction.set_autocommit(False)
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    assert connection.connection is None


def test_a_usable_connection_is_kept_across_iterations(fresh_connection: None) -> None:
    with fresh_connections(job()), connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    kept = connection.connection

    with fresh_connections(job()):
        assert connection.connection is kept


def test_the_async_context_closes_on_the_thread_that_runs_the_async_orm(
    closes: list[str],
) -> None:
    async def iteration() -> str:
        with pytest.raises(RuntimeError):
            async with fresh_connections_async(job(AsyncDjangoJob)):
                closes.append("iteration")
                raise RuntimeError("boom")
        # Django's async ORM runs its queries where sync_to_async(thread_sensitive) does.
        from asgiref.sync import sync_to_async

        return await sync_to_async(lambda: threading.current_thread().name)()

    orm_thread = asyncio.run(iteration())

    assert closes == [f"close on {orm_thread}", "iteration", f"close on {orm_thread}"]
    assert orm_thread != threading.current_thread().name


class Drain(DjangoJob):
    def lock_records(self) -> list[int]:
        self.options["calls"].append("lock_records")
        return [1]

    def process_record(self, record: int) -> None:
        self.options["calls"].append(f"process_record:{record}")

    def unlock_records(self) -> None:
        self.options["calls"].append("unlock_records")
        self.status_abort()


class AsyncDrain(AsyncDjangoJob):
    async def lock_records(self) -> list[int]:
        self.options["calls"].append("lock_records")
        return [1]

    async def process_record(self, record: int) -> None:
        self.options["calls"].append(f"process_record:{record}")

    async def unlock_records(self) -> None:
        self.options["calls"].append("unlock_records")
        self.status_abort()


def run_one_iteration(
    backend: Any, keeper: Any, shared: Any, worker_type: type[Worker], job_class: type[Any]
) -> list[str]:
    spec = WorkerSpec(
        job_id="django",
        worker_index=1,
        job_class=job_class,
        options={"calls": []},
        driver_class=SimpleRedisLock,
        lock_context=LockContext(backend, backend.namespace, "django", 1, IDENTITY, 30.0),
        acquire_timeout=2.0,
    )
    done = threading.Event()
    worker = worker_type(
        spec, keeper=keeper, notifier=Notifier(), on_exit=lambda w: done.set(), shared=shared
    )
    worker.start()
    assert done.wait(10)
    assert worker.outcome != "failed"
    calls: list[str] = spec.options["calls"]
    return calls


def test_a_thread_worker_closes_connections_around_each_iteration_on_its_thread(
    backend: Any, keeper: Any, shared: Any, closes: list[str]
) -> None:
    calls = run_one_iteration(backend, keeper, shared, ThreadWorker, Drain)

    assert calls == ["lock_records", "process_record:1", "unlock_records"]
    assert len(closes) == 2
    assert closes[0] == closes[1] != f"close on {threading.current_thread().name}"


def test_an_asyncio_worker_closes_connections_around_each_iteration(
    backend: Any, keeper: Any, shared: Any, closes: list[str]
) -> None:
    calls = run_one_iteration(backend, keeper, shared, AsyncWorker, AsyncDrain)

    assert calls == ["lock_records", "process_record:1", "unlock_records"]
    assert len(closes) == 2
    assert "pb-asyncio" not in closes[0]


def test_the_command_strips_djangos_own_options_and_adds_the_configured_file() -> None:
    assert cli_arguments(["run", "--settings", "s", "-v", "--pythonpath=."], "pb.yml") == [
        "run",
        "-c",
        "pb.yml",
        "-v",
    ]


@pytest.mark.parametrize("given", [["-c", "mine.yml"], ["--config=mine.yml"], ["-cmine.yml"]])
def test_a_config_file_on_the_command_line_wins_over_the_setting(given: list[str]) -> None:
    assert cli_arguments(["status", *given], "pb.yml") == ["status", *given]


def test_without_a_setting_or_a_command_the_arguments_pass_unchanged() -> None:
    assert cli_arguments(["run", "-v"], None) == ["run", "-v"]
    assert cli_arguments(["--help"], "pb.yml") == ["--help"]


def test_manage_py_process_balancer_runs_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        call_command("process_balancer", "status", "--help")

    assert exit_info.value.code == 0
    assert "Usage: manage.py process_balancer status" in capsys.readouterr().out
