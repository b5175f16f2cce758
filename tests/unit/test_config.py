"""The YAML config: lookup, environments, ${VAR} expansion, validation and job classes."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from process_balancer.backends import registry
from process_balancer.config import defaults
from process_balancer.config.schema import (
    ConfigError,
    JobConfig,
    Settings,
    find_config_file,
    load_config,
    resolve_job_class,
    resolve_job_classes,
    settings_from,
)

JOB_MODULE = """
from process_balancer import AsyncBase, Base

class Queue(Base):
    pass

class Poller(AsyncBase):
    pass

class NotAJob:
    pass

def factory():
    return Queue
"""


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str], Path]:
    """Write a config file (dedented) into tmp_path and return its path."""

    def make(text: str, name: str = "pb.yml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return make


def load(path: Path, env: str | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Load with an empty environment unless one is given, so the host's variables never leak."""
    return load_config(path, env=env, environ={} if environ is None else environ)


def problems_of(
    path: Path, env: str | None = None, environ: dict[str, str] | None = None
) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(path, env, environ)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return list(caught.value.problems)


def one_problem(path: Path, env: str | None = None, environ: dict[str, str] | None = None) -> str:
    problems = problems_of(path, env, environ)
    assert len(problems) == 1, problems
    return problems[0]


# -- finding the file --------------------------------------------------------------------------


def test_default_lookup_prefers_the_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "process_balancer.yml").write_text("")
    (tmp_path / "process_balancer.yml").write_text("")
    assert find_config_file() == Path("process_balancer.yml")


def test_default_lookup_falls_back_to_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "process_balancer.yml").write_text("")
    assert find_config_file() == Path("config/process_balancer.yml")


def test_default_lookup_finds_nothing_in_an_empty_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config_file() is None


def test_a_given_path_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    with pytest.raises(ConfigError, match=r"nope\.yml: no such file$"):
        find_config_file(missing)


def test_without_any_file_settings_come_from_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_config(environ={})
    assert settings == Settings(
        backend=defaults.BACKEND_URL,
        namespace=defaults.NAMESPACE,
        max_threads=defaults.MAX_THREADS,
        shutdown_timeout=defaults.SHUTDOWN_TIMEOUT,
        heartbeat_interval=defaults.HEARTBEAT_INTERVAL,
        process_expiry=defaults.PROCESS_EXPIRY,
        environment=defaults.ENVIRONMENT,
        config_file=None,
        jobs={},
    )


def test_the_default_file_is_read_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "process_balancer.yml").write_text("global:\n  namespace: found\n")
    settings = load_config(environ={})
    assert (settings.namespace, settings.config_file) == ("found", Path("process_balancer.yml"))


def test_an_empty_file_is_valid_and_has_no_jobs(write: Callable[..., Path]) -> None:
    settings = load(write(""))
    assert settings.jobs == {}
    assert settings.max_threads == defaults.MAX_THREADS


# -- environments ------------------------------------------------------------------------------

ENVIRONMENTS = """
global:
  max_threads: 10
  namespace: app
environments:
  production:
    max_threads: 20
  staging:
    namespace: app-staging
"""


def test_env_argument_merges_that_environment_over_global(write: Callable[..., Path]) -> None:
    settings = load(write(ENVIRONMENTS), env="production")
    assert (settings.max_threads, settings.namespace) == (20, "app")
    assert settings.environment == "production"


def test_app_env_chooses_the_environment_when_no_env_is_given(
    write: Callable[..., Path],
) -> None:
    settings = load(write(ENVIRONMENTS), environ={"APP_ENV": "staging"})
    assert (settings.environment, settings.namespace) == ("staging", "app-staging")


def test_env_argument_wins_over_app_env(write: Callable[..., Path]) -> None:
    settings = load(write(ENVIRONMENTS), env="production", environ={"APP_ENV": "staging"})
    assert settings.environment == "production"


def test_environment_defaults_to_development_and_may_have_no_entry(
    write: Callable[..., Path],
) -> None:
    settings = load(write(ENVIRONMENTS))
    assert (settings.environment, settings.max_threads) == (defaults.ENVIRONMENT, 10)


def test_a_bad_value_in_an_environment_not_chosen_is_still_reported(
    write: Callable[..., Path],
) -> None:
    path = write("environments:\n  production:\n    max_threads: many\n")
    assert one_problem(path, env="development").endswith(
        "environments.production.max_threads: must be an integer >= 1, got 'many'"
    )


# -- ${VAR} expansion --------------------------------------------------------------------------


def test_a_variable_is_expanded_before_parsing_so_numbers_stay_numbers(
    write: Callable[..., Path],
) -> None:
    settings = load(write("global:\n  max_threads: ${THREADS}\n"), environ={"THREADS": "12"})
    assert settings.max_threads == 12


def test_the_default_is_used_when_the_variable_is_unset(write: Callable[..., Path]) -> None:
    settings = load(write("global:\n  max_threads: ${THREADS:-10}\n"))
    assert settings.max_threads == 10


def test_the_default_is_used_when_the_variable_is_empty(write: Callable[..., Path]) -> None:
    settings = load(write("global:\n  namespace: ${NS:-fallback}\n"), environ={"NS": ""})
    assert settings.namespace == "fallback"


def test_a_set_variable_wins_over_its_default(write: Callable[..., Path]) -> None:
    settings = load(write("global:\n  max_threads: ${THREADS:-10}\n"), environ={"THREADS": "3"})
    assert settings.max_threads == 3


def test_double_dollar_brace_is_a_literal_dollar_brace(write: Callable[..., Path]) -> None:
    path = write("jobs:\n  a:\n    class: m:C\n    template: $${HOME}/x\n")
    assert load(path).jobs["a"].options["template"] == "${HOME}/x"


def test_an_unset_variable_without_default_names_the_variable_and_line(
    write: Callable[..., Path],
) -> None:
    path = write("global:\n  namespace: app\n  backend: ${REDIS_HOST_URL}\n")
    problem = one_problem(path)
    assert problem.startswith(f"{path}: line 3: ")
    assert "REDIS_HOST_URL is not set" in problem


def test_every_unset_variable_is_reported(write: Callable[..., Path]) -> None:
    problems = problems_of(write("global:\n  namespace: ${A}\n  backend: ${B}\n"))
    assert [p.split(": ")[1] for p in problems] == ["line 2", "line 3"]


def test_variables_in_comments_are_left_alone(write: Callable[..., Path]) -> None:
    path = write(
        "# backend: ${PRODUCTION_REDIS}\nglobal:\n  namespace: app  # was ${OLD_NS}\n"
        "  backend: 'redis://h/0#${NOT_A_COMMENT:-x}'\n"
    )
    settings = load(path)
    assert settings.namespace == "app"
    assert settings.backend == "redis://h/0#x"


def test_a_malformed_reference_is_an_error(write: Callable[..., Path]) -> None:
    problem = one_problem(write("global:\n  namespace: ${not valid}\n"))
    assert "line 2: malformed '${'" in problem


def test_a_yaml_syntax_error_names_the_file_and_line(write: Callable[..., Path]) -> None:
    path = write("global:\n  namespace: app\n max_threads: [1\n")
    problem = one_problem(path)
    assert problem.startswith(f"{path}: line 3")
    assert "invalid YAML" in problem


def test_a_repeated_key_is_an_error_instead_of_dropping_a_job(write: Callable[..., Path]) -> None:
    path = write("jobs:\n  a:\n    class: m:C\n  a:\n    class: m:D\n")
    problem = one_problem(path)
    assert problem.startswith(f"{path}: line 4") and "duplicate key 'a'" in problem


def test_yaml_anchors_and_merge_keys_are_not_mistaken_for_repeated_keys(
    write: Callable[..., Path],
) -> None:
    path = write(
        "jobs:\n  a: &base {class: m:C, workers: 2}\n  b:\n    <<: *base\n    workers: 3\n"
    )
    assert [job.workers for job in load(path).jobs.values()] == [2, 3]


# -- top level and settings --------------------------------------------------------------------


def test_a_top_level_that_is_not_a_mapping_is_an_error(write: Callable[..., Path]) -> None:
    path = write("- a\n- b\n")
    assert one_problem(path) == (
        f"{path}: (top level): must be a mapping with the keys global, environments, jobs, "
        "got a list"
    )


def test_an_unknown_top_level_key_is_named_with_the_allowed_keys(
    write: Callable[..., Path],
) -> None:
    path = write("global: {}\nworkers: 3\n")
    problem = one_problem(path)
    assert problem.startswith(f"{path}: workers: unknown top-level key;")
    assert "allowed keys: global, environments, jobs" in problem


def test_an_unknown_setting_suggests_the_closest_key(write: Callable[..., Path]) -> None:
    path = write("environments:\n  production:\n    max_thread: 20\n")
    problem = one_problem(path, env="production")
    assert problem.startswith(f"{path}: environments.production.max_thread: unknown setting;")
    assert "did you mean 'max_threads'?" in problem


def test_an_unknown_setting_with_nothing_close_gets_no_suggestion(
    write: Callable[..., Path],
) -> None:
    problem = one_problem(write("global:\n  colour: blue\n"))
    assert "global.colour: unknown setting; allowed keys: backend," in problem


def test_a_settings_section_that_is_not_a_mapping_is_an_error(
    write: Callable[..., Path],
) -> None:
    assert one_problem(write("global: [1]\n")).endswith(
        "global: must be a mapping of settings, got a list"
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_threads", "four", "must be an integer >= 1, got 'four'"),
        ("max_threads", "true", "must be an integer >= 1, got true"),
        ("max_threads", "2.5", "must be an integer >= 1, got 2.5"),
        ("max_threads", "0", "must be an integer >= 1, got 0"),
        ("shutdown_timeout", "'30'", "must be a non-negative number of seconds, got '30'"),
        ("shutdown_timeout", "-1", "must be a non-negative number of seconds, got -1"),
        ("shutdown_timeout", "false", "must be a non-negative number of seconds, got false"),
        ("heartbeat_interval", "0", "must be a positive number of seconds, got 0"),
        ("process_expiry", ".nan", "must be a positive number of seconds, got nan"),
        ("namespace", "my app", "must be a non-empty string of letters, digits"),
        ("namespace", "''", "must be a non-empty string of letters, digits"),
        ("backend", "42", "must be a backend URL such as"),
        ("metrics_port", "0", "must be a TCP port from 1 to 65535, or null for none, got 0"),
        ("metrics_port", "65536", "must be a TCP port from 1 to 65535"),
        ("metrics_port", "'9100'", "must be a TCP port from 1 to 65535"),
        ("metrics_port", "true", "must be a TCP port from 1 to 65535"),
        ("metrics_host", "''", "must be a host name or IP address to bind to"),
        ("metrics_host", "9100", "must be a host name or IP address to bind to"),
    ],
)
def test_a_setting_of_the_wrong_type_or_range_is_an_error(
    write: Callable[..., Path], key: str, value: str, message: str
) -> None:
    path = write(f"global:\n  {key}: {value}\n")
    assert one_problem(path).startswith(f"{path}: global.{key}: {message}")


def test_metrics_are_off_by_default_and_bind_to_loopback(write: Callable[..., Path]) -> None:
    settings = load(write("global: {}\n"))
    assert (settings.metrics_port, settings.metrics_host) == (None, "127.0.0.1")


def test_metrics_port_may_be_set_per_environment_or_null(write: Callable[..., Path]) -> None:
    path = write(
        """
        global:
          metrics_port: null
        environments:
          production:
            metrics_port: 9100
            metrics_host: 0.0.0.0
        """
    )
    assert load(path).metrics_port is None
    settings = load(path, env="production")
    assert (settings.metrics_port, settings.metrics_host) == (9100, "0.0.0.0")


def test_numbers_accept_ints_and_floats(write: Callable[..., Path]) -> None:
    settings = load(write("global:\n  shutdown_timeout: 5\n  heartbeat_interval: 0.5\n"))
    assert (settings.shutdown_timeout, settings.heartbeat_interval) == (5.0, 0.5)
    assert isinstance(settings.shutdown_timeout, float)


def test_process_expiry_below_twice_the_heartbeat_interval_names_both_keys(
    write: Callable[..., Path],
) -> None:
    path = write("global:\n  heartbeat_interval: 2\n  process_expiry: 3\n")
    problem = one_problem(path)
    assert problem.startswith(f"{path}: global.process_expiry: ")
    assert "heartbeat_interval" in problem and "2 x" in problem


def test_process_expiry_is_checked_against_the_merged_environment(
    write: Callable[..., Path],
) -> None:
    path = write(
        "global:\n  process_expiry: 4\nenvironments:\n  slow:\n    heartbeat_interval: 3\n"
    )
    assert load(path).process_expiry == 4.0
    assert one_problem(path, env="slow").endswith(
        "global.process_expiry: process_expiry (4 s, global.process_expiry) must be at least "
        "2 x heartbeat_interval (3 s, environments.slow.heartbeat_interval) = 6 s, so one late "
        "heartbeat does not count a process as dead; raise process_expiry or lower "
        "heartbeat_interval"
    )


def test_every_problem_in_a_file_is_reported_at_once(write: Callable[..., Path]) -> None:
    path = write(
        """
        global:
          max_threads: 0
          namspace: x
        jobs:
          bad id:
            class: m:C
          ok:
            workers: -1
        """
    )
    paths = [p.split(": ")[1] for p in problems_of(path)]
    assert paths == [
        "global.max_threads",
        "global.namspace",
        "jobs.bad id",
        "jobs.ok.class",
        "jobs.ok.workers",
    ]


# -- backend -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", [s for kind in registry.KINDS for s in kind.schemes])
def test_each_accepted_scheme_is_a_valid_backend(write: Callable[..., Path], scheme: str) -> None:
    local = {
        "unix": "unix:///tmp/redis.sock",
        "sqlite": "sqlite:///pb.sqlite3",
        "memory": "memory://group",
    }
    url = local.get(scheme, f"{scheme}://h:6380/1")
    assert load(write(f"global:\n  backend: {url}\n")).backend == url


def test_a_backend_with_another_scheme_lists_the_accepted_ones(
    write: Callable[..., Path],
) -> None:
    problem = one_problem(write("global:\n  backend: http://localhost:6379\n"))
    assert "global.backend: unsupported backend URL 'http://localhost:6379'" in problem
    for scheme in ("redis://", "rediss://", "unix://", "sqlite://", "postgresql://"):
        assert scheme in problem


def test_a_password_in_a_bad_backend_url_is_not_echoed(write: Callable[..., Path]) -> None:
    problem = one_problem(write("global:\n  backend: 'redis://user:s3cret@h:port/0'\n"))
    assert "s3cret" not in problem and "user:***@h:port" in problem


def test_backend_falls_back_to_redis_url_then_to_the_default(
    write: Callable[..., Path],
) -> None:
    path = write("")
    assert load(path, environ={"REDIS_URL": "redis://other:1/2"}).backend == "redis://other:1/2"
    assert load(path).backend == defaults.BACKEND_URL == "sqlite:///process_balancer.sqlite3"


@pytest.mark.parametrize("url", ["sqlite:///state/pb.sqlite3", "sqlite:////var/lib/pb.sqlite3"])
def test_a_sqlite_url_names_a_relative_or_absolute_file(
    write: Callable[..., Path], url: str
) -> None:
    assert load(write(f"global:\n  backend: {url}\n")).backend == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://otherhost/pb.sqlite3", "has no host"),
        ("sqlite:///", "needs a file path"),
        ("sqlite:///:memory:", "name a file"),
    ],
)
def test_a_sqlite_url_without_a_local_file_is_refused(
    write: Callable[..., Path], url: str, message: str
) -> None:
    problem = one_problem(write(f"global:\n  backend: '{url}'\n"))
    assert "global.backend: " in problem and message in problem


def test_a_bad_redis_url_variable_is_reported(write: Callable[..., Path]) -> None:
    problem = one_problem(write(""), environ={"REDIS_URL": "localhost"})
    assert "backend (from REDIS_URL): unsupported backend URL 'localhost'" in problem


# -- jobs --------------------------------------------------------------------------------------


def test_a_job_entry_becomes_a_job_config_with_defaults(write: Callable[..., Path]) -> None:
    job = load(write("jobs:\n  sync:\n    class: app.jobs:Sync\n")).jobs["sync"]
    assert job == JobConfig(
        job_id="sync",
        class_path="app.jobs:Sync",
        workers=None,
        runtime_lock_timeout=defaults.RUNTIME_LOCK_TIMEOUT,
        lock_acquire_timeout=defaults.LOCK_ACQUIRE_TIMEOUT,
        options={"class": "app.jobs:Sync"},
    )


def test_job_options_are_the_whole_entry_including_the_jobs_own_keys(
    write: Callable[..., Path],
) -> None:
    path = write(
        """
        jobs:
          q:
            class: app.jobs:Q
            workers: 4
            runtime_lock_timeout: 12.5
            batch_size: 100
            tables: [a, b]
        """
    )
    job = load(path).jobs["q"]
    assert (job.workers, job.runtime_lock_timeout) == (4, 12.5)
    assert job.options == {
        "class": "app.jobs:Q",
        "workers": 4,
        "runtime_lock_timeout": 12.5,
        "batch_size": 100,
        "tables": ["a", "b"],
    }


def test_jobs_keep_the_file_order(write: Callable[..., Path]) -> None:
    path = write("jobs:\n  z: {class: m:Z}\n  a: {class: m:A}\n  m: {class: m:M}\n")
    assert list(load(path).jobs) == ["z", "a", "m"]


def test_a_job_key_close_to_a_runner_key_logs_a_warning(
    write: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="process_balancer.config.schema"):
        job = load(write("jobs:\n  q:\n    class: m:C\n    workerss: 4\n")).jobs["q"]
    assert job.workers is None and job.options["workerss"] == 4
    assert "jobs.q.workerss is passed to the job as its own option; did you mean 'workers'?" in (
        caplog.text
    )


def test_a_worker_kind_is_checked_and_a_count_there_points_at_workers(
    write: Callable[..., Path],
) -> None:
    assert load(write("jobs:\n  q:\n    class: m:C\n")).jobs["q"].worker is None  # by class
    assert load(write("jobs:\n  q:\n    class: m:C\n    worker: thread\n")).jobs["q"].worker == (
        "thread"
    )
    path = write("jobs:\n  q:\n    class: m:C\n    worker: fibers\n")
    assert one_problem(path) == (
        f"{path}: jobs.q.worker: must be one of asyncio, process, thread, got 'fibers'"
    )
    path = write("jobs:\n  q:\n    class: m:C\n    worker: 4\n")
    assert one_problem(path) == (
        f"{path}: jobs.q.worker: must be one of asyncio, process, thread, got 4 "
        "(the number of workers is `workers:`)"
    )


@pytest.mark.parametrize(
    ("value", "got"), [("-1", "-1"), ("four", "'four'"), ("true", "true"), ("1.5", "1.5")]
)
def test_workers_must_be_a_non_negative_integer(
    write: Callable[..., Path], value: str, got: str
) -> None:
    path = write(f"jobs:\n  process_queue:\n    class: m:C\n    workers: {value}\n")
    assert one_problem(path) == (
        f"{path}: jobs.process_queue.workers: must be a non-negative integer, got {got}"
    )


def test_zero_workers_is_allowed(write: Callable[..., Path]) -> None:
    assert load(write("jobs:\n  q:\n    class: m:C\n    workers: 0\n")).jobs["q"].workers == 0


def test_max_workers_defaults_to_the_global_ceiling(write: Callable[..., Path]) -> None:
    settings = load(write("jobs:\n  q:\n    class: m:C\n"))
    assert settings.max_workers == defaults.MAX_WORKERS == 10_000
    assert settings.jobs["q"].max_workers == defaults.MAX_WORKERS
    assert settings.max_workers_of("q") == settings.max_workers_of("other") == 10_000


def test_a_job_without_its_own_max_workers_takes_the_merged_global_one(
    write: Callable[..., Path],
) -> None:
    path = write(
        """
        global:
          max_workers: 50
        environments:
          production:
            max_workers: 80
        jobs:
          q: {class: m:C}
          big: {class: m:C, max_workers: 20000, workers: 15000}
        """
    )
    settings = load(path, env="production")
    assert settings.max_workers == 80
    assert settings.jobs["q"].max_workers == 80
    assert settings.jobs["big"].max_workers == 20_000
    assert settings.max_workers_of("big") == 20_000 and settings.max_workers_of("x") == 80


def test_workers_above_the_default_ceiling_is_a_config_error(write: Callable[..., Path]) -> None:
    path = write("jobs:\n  q:\n    class: m:C\n    workers: 100000000\n")
    assert one_problem(path) == (
        f"{path}: jobs.q.workers: 100,000,000 is above the job's ceiling max_workers = 10,000 "
        "(the default); lower workers or set jobs.q.max_workers (at most 1,000,000)"
    )


def test_workers_above_the_global_or_own_ceiling_is_a_config_error(
    write: Callable[..., Path],
) -> None:
    path = write(
        """
        global:
          max_workers: 8
        jobs:
          a: {class: m:C, workers: 9}
          b: {class: m:C, workers: 9, max_workers: 5}
          c: {class: m:C, workers: 9, max_workers: 9}
        """
    )
    assert problems_of(path) == [
        f"{path}: jobs.a.workers: 9 is above the job's ceiling max_workers = 8 "
        "(global.max_workers); lower workers or set jobs.a.max_workers (at most 1,000,000)",
        f"{path}: jobs.b.workers: 9 is above the job's ceiling max_workers = 5 "
        "(jobs.b.max_workers); lower workers or raise it (at most 1,000,000)",
    ]


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "'10'", "true", "1000001", "null"])
@pytest.mark.parametrize("where", ["global", "job"])
def test_max_workers_must_be_a_positive_integer_up_to_the_hard_limit(
    write: Callable[..., Path], value: str, where: str
) -> None:
    if where == "global":
        path, key = write(f"global:\n  max_workers: {value}\n"), "global.max_workers"
    else:
        path = write(f"jobs:\n  q:\n    class: m:C\n    workers: 3\n    max_workers: {value}\n")
        key = "jobs.q.max_workers"
    assert one_problem(path).startswith(
        f"{path}: {key}: must be an integer from 1 to 1,000,000, got "
    )


def test_max_workers_at_the_hard_limit_is_accepted(write: Callable[..., Path]) -> None:
    path = write("jobs:\n  q: {class: m:C, workers: 1000000, max_workers: 1000000}\n")
    assert load(path).jobs["q"].workers == defaults.MAX_WORKERS_HARD_LIMIT


def test_max_workers_is_not_passed_on_as_an_unknown_job_option(
    write: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="process_balancer.config.schema"):
        load(write("jobs:\n  q: {class: m:C, max_workers: 3}\n"))
    assert caplog.text == ""


def test_settings_from_accepts_max_workers() -> None:
    assert settings_from(backend="redis://h:1/0", max_workers=7, environ={}).max_workers == 7
    with pytest.raises(ConfigError, match="max_workers: must be an integer from 1 to"):
        settings_from(backend="redis://h:1/0", max_workers=0, environ={})


@pytest.mark.parametrize("key", ["runtime_lock_timeout", "lock_acquire_timeout"])
@pytest.mark.parametrize("value", ["0", "-3", "soon", "true"])
def test_job_timeouts_must_be_positive_numbers(
    write: Callable[..., Path], key: str, value: str
) -> None:
    path = write(f"jobs:\n  q:\n    class: m:C\n    {key}: {value}\n")
    assert f"jobs.q.{key}: must be a positive number of seconds" in one_problem(path)


@pytest.mark.parametrize(
    ("job_id", "shown"), [("'bad id'", "'bad id'"), ("12", "12"), ("'x/y'", "'x/y'"), ("''", "''")]
)
def test_a_job_id_must_be_a_string_of_safe_characters(
    write: Callable[..., Path], job_id: str, shown: str
) -> None:
    problem = one_problem(write(f"jobs:\n  {job_id}:\n    class: m:C\n"))
    assert problem.endswith(
        f"a job id must be a non-empty string of letters, digits, '_', '.' and '-', got {shown}"
    )


def test_a_job_without_class_is_an_error(write: Callable[..., Path]) -> None:
    path = write("jobs:\n  q:\n    workers: 2\n")
    assert one_problem(path).startswith(f"{path}: jobs.q.class: missing;")


@pytest.mark.parametrize("value", ["''", "3", "[a]", "null"])
def test_a_job_class_must_be_a_non_empty_string(write: Callable[..., Path], value: str) -> None:
    problem = one_problem(write(f"jobs:\n  q:\n    class: {value}\n"))
    assert "jobs.q.class: must be a 'module:Class' string" in problem


@pytest.mark.parametrize(
    ("entry", "shown"), [("[1, 2]", "a list"), ("", "null (empty)"), ("app.jobs:Q", "'app.jobs:Q'")]
)
def test_a_job_entry_that_is_not_a_mapping_is_an_error(
    write: Callable[..., Path], entry: str, shown: str
) -> None:
    problem = one_problem(write(f"jobs:\n  q: {entry}\n"))
    assert problem.endswith(f"jobs.q: must be a mapping with at least a 'class' key, got {shown}")


def test_jobs_that_is_not_a_mapping_is_an_error(write: Callable[..., Path]) -> None:
    assert "jobs: must be a mapping of job ids" in one_problem(write("jobs: [a, b]\n"))


# -- settings without a file -------------------------------------------------------------------


def test_settings_from_uses_what_is_given_and_defaults_for_the_rest() -> None:
    settings = settings_from(backend="rediss://h/0", namespace="ns", max_threads=3, environ={})
    assert (settings.backend, settings.namespace, settings.max_threads) == ("rediss://h/0", "ns", 3)
    assert settings.config_file is None and settings.jobs == {}


def test_settings_from_falls_back_to_redis_url() -> None:
    assert settings_from(environ={"REDIS_URL": "redis://r:1/0"}).backend == "redis://r:1/0"


def test_settings_from_validates_like_a_file_without_a_file_name() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from(backend="mysql://x", namespace="a b", environ={})
    assert [p.split(":")[0] for p in caught.value.problems] == ["backend", "namespace"]


def test_settings_from_rejects_an_unknown_setting() -> None:
    with pytest.raises(TypeError, match="max_thread"):
        settings_from(max_thread=3, environ={})


# -- job classes -------------------------------------------------------------------------------


@pytest.fixture
def new_modules() -> Iterator[None]:
    """Forget every module a test imported."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_modules: None) -> Path:
    directory = tmp_path / "mods"
    directory.mkdir()
    (directory / "pb_cfg_jobs.py").write_text(JOB_MODULE)
    monkeypatch.syspath_prepend(str(directory))
    return directory


def job(class_path: str, job_id: str = "q", worker: str | None = None) -> JobConfig:
    return JobConfig(job_id, class_path, None, 30.0, 10.0, {"class": class_path}, worker=worker)


def resolve_problem(class_path: str, worker: str | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        resolve_job_class(job(class_path, worker=worker), Path("pb.yml"))
    assert len(caught.value.problems) == 1
    return caught.value.problems[0]


@pytest.mark.parametrize("class_path", ["pb_cfg_jobs:Queue", "pb_cfg_jobs.Queue"])
def test_a_job_class_resolves_from_either_spelling(module_dir: Path, class_path: str) -> None:
    cls = resolve_job_class(job(class_path), None)
    assert cls.__name__ == "Queue" and cls.__module__ == "pb_cfg_jobs"


def test_a_missing_module_reports_the_import_error_without_traceback(module_dir: Path) -> None:
    assert resolve_problem("pb_cfg_nowhere.jobs:Queue") == (
        "pb.yml: jobs.q.class: cannot import 'pb_cfg_nowhere.jobs': "
        "No module named 'pb_cfg_nowhere'"
    )


def test_a_missing_attribute_is_named_with_a_suggestion(module_dir: Path) -> None:
    assert resolve_problem("pb_cfg_jobs:Queu") == (
        "pb.yml: jobs.q.class: 'pb_cfg_jobs' has no attribute 'Queu'; did you mean 'Queue'?"
    )


def test_something_that_is_not_a_class_is_an_error(module_dir: Path) -> None:
    assert "'pb_cfg_jobs:factory' is a function, not a class" in resolve_problem(
        "pb_cfg_jobs:factory"
    )


@pytest.mark.parametrize("class_path", ["pb_cfg_jobs:NotAJob", "process_balancer.job:Base"])
def test_a_class_that_is_not_a_base_subclass_is_an_error(module_dir: Path, class_path: str) -> None:
    assert resolve_problem(class_path).endswith(
        f"{class_path!r} is not a job: it must subclass process_balancer.Base "
        "(or process_balancer.AsyncBase)"
    )


def test_a_worker_kind_that_cannot_run_the_class_is_an_error(module_dir: Path) -> None:
    assert resolve_job_class(job("pb_cfg_jobs:Poller"), None).__name__ == "Poller"
    assert resolve_job_class(job("pb_cfg_jobs:Poller", worker="asyncio"), None)
    assert resolve_problem("pb_cfg_jobs:Poller", "thread") == (
        "pb.yml: jobs.q.worker: pb_cfg_jobs.Poller is an AsyncBase job (its methods are "
        "coroutines), which only the asyncio kind runs; remove `worker: thread` or set it to "
        "asyncio"
    )
    assert resolve_problem("pb_cfg_jobs:Queue", "asyncio") == (
        "pb.yml: jobs.q.worker: the asyncio kind runs AsyncBase jobs and pb_cfg_jobs.Queue is "
        "not one; subclass process_balancer.AsyncBase with async def methods, or remove "
        "`worker: asyncio`"
    )


def test_iteration_context_names_factories(write: Callable[..., Path]) -> None:
    path = write("jobs:\n  q:\n    class: m:C\n    iteration_context: [a:b, c.d:e]\n")
    assert load(path).jobs["q"].iteration_context == ("a:b", "c.d:e")
    assert load(write("jobs:\n  q:\n    class: m:C\n")).jobs["q"].iteration_context == ()
    path = write("jobs:\n  q:\n    class: m:C\n    iteration_context: {a: b}\n")
    assert one_problem(path) == (
        f"{path}: jobs.q.iteration_context: must be a list of 'module:function' names of "
        "context-manager factories, got a mapping"
    )


def test_a_class_path_without_module_is_an_error() -> None:
    assert resolve_problem("Queue").endswith(
        "must be 'module:Class' or 'module.Class', got 'Queue'"
    )


def test_an_exception_while_importing_the_module_is_reported(module_dir: Path) -> None:
    (module_dir / "pb_cfg_broken.py").write_text("x = 1\nraise RuntimeError('no database')\n")
    problem = resolve_problem("pb_cfg_broken:Queue")
    assert problem.startswith(
        "pb.yml: jobs.q.class: importing 'pb_cfg_broken' raised RuntimeError: no database (at "
    )
    assert problem.endswith("pb_cfg_broken.py:2)")
    assert "pb_cfg_broken" not in sys.modules


def test_a_missing_dependency_of_the_module_is_reported_as_raised_by_it(
    module_dir: Path,
) -> None:
    (module_dir / "pb_cfg_needs.py").write_text("import pb_cfg_absent_dependency\n")
    problem = resolve_problem("pb_cfg_needs:Queue")
    assert "importing 'pb_cfg_needs' raised ModuleNotFoundError: No module named " in problem


def test_resolve_job_classes_reports_every_bad_job_at_once(
    module_dir: Path, write: Callable[..., Path]
) -> None:
    path = write(
        """
        jobs:
          good: {class: "pb_cfg_jobs:Queue"}
          missing: {class: "pb_cfg_jobs:Nope"}
          plain: {class: "pb_cfg_jobs:NotAJob"}
        """
    )
    with pytest.raises(ConfigError) as caught:
        resolve_job_classes(load(path))
    assert [p.split(": ")[1] for p in caught.value.problems] == [
        "jobs.missing.class",
        "jobs.plain.class",
    ]


def test_resolve_job_classes_maps_job_ids_to_classes(
    module_dir: Path, write: Callable[..., Path]
) -> None:
    path = write('jobs:\n  a: {class: "pb_cfg_jobs:Queue"}\n  b: {class: pb_cfg_jobs.Queue}\n')
    classes = resolve_job_classes(load(path))
    assert list(classes) == ["a", "b"] and classes["a"] is classes["b"]


def test_max_iteration_time_is_positive_seconds(write: Callable[..., Path]) -> None:
    job = load(write("jobs:\n  q:\n    class: m:C\n    max_iteration_time: 2.5\n")).jobs["q"]
    assert job.max_iteration_time == 2.5
    assert load(write("jobs:\n  q:\n    class: m:C\n")).jobs["q"].max_iteration_time is None
    path = write("jobs:\n  q:\n    class: m:C\n    max_iteration_time: 0\n")
    assert one_problem(path) == (
        f"{path}: jobs.q.max_iteration_time: must be a positive number of seconds, got 0"
    )
