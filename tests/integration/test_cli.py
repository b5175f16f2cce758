"""Argument, config and connection errors of the group commands: a clear line, exit 2 or 1."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from process_balancer.backends import open_backend
from process_balancer.cli import main
from support.cli import free_port, pb
from support.harness import wait_until

COMMANDS = [
    ["status"],
    ["status", "--json"],
    ["scale", "q", "3"],
    ["scale", "q", "--by", "1"],
    ["pause", "q"],
    ["resume", "q"],
    ["quiet", "--all"],
    ["stop", "h:1:x"],
    ["dump", "--host", "h"],
]


@pytest.fixture
def closed_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a))
def test_an_unreachable_backend_exits_1_with_one_clear_line(args: list[str]) -> None:
    result = pb(*args, "--backend", f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("process-balancer: cannot reach the backend: ")
    assert "Connection refused" in lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scale", "q"], "give either the new count N or --by K"),
        (["scale", "q", "3", "--by", "1"], "give either the new count N or --by K"),
        (["scale", "q", "-1"], "N must be 0 or more, got -1"),
        (["scale", "q", "lots"], "N must be a whole number of workers, got 'lots'"),
        (["scale", "q", "--bogus"], "no such option: --bogus"),
        (["scale", "q", "1e3"], "N must be a whole number of workers, got '1e3'"),
        (["scale", "q", "2.5"], "N must be a whole number of workers, got '2.5'"),
        (
            ["scale", "q", "99999999999999999999999"],
            "N must be at most 10,000, the default max_workers (set max_workers in the config "
            "to allow more, up to 1,000,000), got 99999999999999999999999; nothing was changed",
        ),
        (["scale", "q", "10001"], "N must be at most 10,000, the default max_workers"),
        (
            ["scale", "q", "--by", "99999999999999999999999"],
            "K must be from -10,000 to 10,000, the default max_workers",
        ),
        (["scale", "q", "--by", "-10001"], "K must be from -10,000 to 10,000"),
        (["quiet"], "name at least one IDENTITY, or use --all or --host HOST"),
        (["stop"], "name at least one IDENTITY, or use --all or --host HOST"),
    ],
)
def test_bad_arguments_exit_2_before_the_backend_is_asked(
    args: list[str], message: str, closed_url: str
) -> None:
    result = invoke(*args, "--backend", closed_url)
    assert result.exit_code == 2
    assert f"process-balancer: {message}" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["scale", "q", "--by", "x"],
        ["status", "--watch", "0"],
        ["status", "--stuck-after", "-1"],
        ["quiet", "--all", "--wait", "-1"],
        ["scale"],
        ["pause"],
    ],
)
def test_malformed_options_are_usage_errors(args: list[str], closed_url: str) -> None:
    result = invoke(*args, "--backend", closed_url)
    assert result.exit_code == 2
    assert "Usage:" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "ftp://host"], "--backend: unsupported backend URL 'ftp://host'"),
        (["--namespace", "my app"], "--namespace: must be a non-empty string"),
        (["-c", "/nonexistent/pb.yml"], "/nonexistent/pb.yml: no such file"),
    ],
)
def test_a_bad_group_option_or_config_exits_2(args: list[str], message: str) -> None:
    result = invoke("status", *args)
    assert result.exit_code == 2
    assert f"process-balancer: {message}" in result.stderr


def test_a_bad_config_file_names_the_key(tmp_path) -> None:
    config = tmp_path / "pb.yml"
    config.write_text("global:\n  metrics_port: 70000\n")
    result = invoke("status", "-c", str(config))
    assert result.exit_code == 2
    assert "global.metrics_port: must be a TCP port from 1 to 65535" in result.stderr


def test_every_subcommand_has_help() -> None:
    for name in ("run", "status", "scale", "pause", "resume", "quiet", "stop", "dump"):
        result = invoke(name, "--help")
        assert result.exit_code == 0, name
        if name != "run":
            assert "--backend URL" in result.output and "--namespace NAME" in result.output
        assert "-c, --config" in result.output


# -- against Redis, no processes ----------------------------------------------------------------


def test_an_unknown_job_is_refused_unless_forced(sqlite_backend_url: str, namespace: str) -> None:
    group = ["--backend", sqlite_backend_url, "--namespace", namespace]
    result = invoke("scale", "nope", "3", *group)
    assert result.exit_code == 2
    assert "unknown job 'nope'" in result.stderr and "--force" in result.stderr
    forced = invoke("scale", "nope", "3", "--force", *group)
    assert forced.exit_code == 0
    assert forced.stdout == "nope: 3 workers (was 1)\n"


def test_a_change_below_zero_is_refused(sqlite_backend_url: str, namespace: str) -> None:
    group = ["--backend", sqlite_backend_url, "--namespace", namespace]
    invoke("scale", "q", "1", "--force", *group)
    result = invoke("scale", "q", "--by", "-2", "--force", *group)
    assert result.exit_code == 2
    assert "cannot go below 0" in result.stderr
    assert invoke("status", "--json", *group).exit_code == 0


def test_resume_of_a_job_that_is_not_paused_is_an_error(
    sqlite_backend_url: str, namespace: str
) -> None:
    result = invoke("resume", "q", "--backend", sqlite_backend_url, "--namespace", namespace)
    assert result.exit_code == 1
    assert "job 'q' is not paused" in result.stderr


def test_a_config_file_names_the_group_and_its_jobs(
    tmp_path, sqlite_backend_url, namespace
) -> None:
    config = tmp_path / "pb.yml"
    config.write_text(
        f"global:\n  backend: {sqlite_backend_url}\n  namespace: {namespace}\n"
        "jobs:\n  q:\n    class: support.jobs:RecordingJob\n    workers: 2\n"
    )
    result = invoke("scale", "q", "--by", "3", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert result.stdout == "q: 5 workers (was 2)\n"


# -- the worker-count ceiling --------------------------------------------------------------------


def ceiling_config(tmp_path, backend_url: str, namespace: str) -> str:
    config = tmp_path / "pb.yml"
    config.write_text(
        f"global:\n  backend: {backend_url}\n  namespace: {namespace}\n  max_workers: 50\n"
        "jobs:\n  q:\n    class: support.jobs:RecordingJob\n    workers: 2\n"
        "    max_workers: 8\n"
    )
    return str(config)


def test_a_huge_count_exits_2_and_writes_nothing(tmp_path, backend_url, namespace) -> None:
    config = ceiling_config(tmp_path, backend_url, namespace)
    for args in (["99999999999999999999999"], ["9"], ["--by", "7"], ["--by", str(10**23)]):
        result = invoke("scale", "q", *args, "-c", config)
        assert result.exit_code == 2, (args, result.output)
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert "nothing was changed" in result.stderr
    backend = open_backend(backend_url, namespace)
    try:
        assert backend.get_count("q") is None and backend.snapshot().version == 0
    finally:
        backend.close()


def test_the_ceiling_named_is_the_jobs_own_or_the_global_one(
    tmp_path, sqlite_backend_url: str, namespace: str
) -> None:
    config = ceiling_config(tmp_path, sqlite_backend_url, namespace)
    own = invoke("scale", "q", "9", "-c", config)
    assert own.stderr == (
        "process-balancer: N must be at most 8, the max_workers of job 'q' (set "
        f"jobs.q.max_workers in {config} to allow more, up to 1,000,000), got 9; nothing was "
        "changed\n"
    )
    other = invoke("scale", "other", "51", "--force", "-c", config)
    assert "N must be at most 50, the global max_workers (set max_workers in " in other.stderr
    assert invoke("scale", "q", "8", "-c", config).stdout == "q: 8 workers (was 2)\n"
    past = invoke("scale", "q", "--by", "1", "-c", config)
    assert past.exit_code == 2
    assert "the result, 9, would be above its ceiling of 8 (max_workers)" in past.stderr


def test_pause_and_resume_refuse_a_count_above_the_ceiling(
    tmp_path, sqlite_backend_url: str, namespace: str
) -> None:
    config = ceiling_config(tmp_path, sqlite_backend_url, namespace)
    group = ["--backend", sqlite_backend_url, "--namespace", namespace]
    assert invoke("scale", "q", "20", "--force", *group).exit_code == 0  # default ceiling
    paused = invoke("pause", "q", "-c", config)
    assert paused.exit_code == 1
    assert paused.stderr.startswith("process-balancer: cannot pause job 'q': its count, 20,")
    assert invoke("pause", "q", "--force", *group).exit_code == 0
    resumed = invoke("resume", "q", "-c", config)
    assert resumed.exit_code == 1
    assert "cannot resume job 'q' with 20 workers" in resumed.stderr
    assert len(resumed.stderr.splitlines()) == 1


# -- commands that only read never create a SQLite file -----------------------------------------


READING = [
    ["status"],
    ["status", "--json"],
    ["dump", "--all"],
    ["quiet", "h:1:x"],
    ["stop", "--host", "h"],
]


@pytest.mark.parametrize("args", READING, ids=lambda a: " ".join(a))
def test_a_reading_command_on_a_missing_sqlite_file_says_so_and_creates_nothing(
    tmp_path, args: list[str]
) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "x.db"
    result = invoke(*args, "--backend", f"sqlite:///{missing}")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"process-balancer: the SQLite file {missing} does not exist, so no process of this "
        "group has run yet; check the backend URL (sqlite:///relative/path or "
        "sqlite:////absolute/path) or start `process-balancer run`, which creates it"
    ]
    assert list(tmp_path.iterdir()) == []


def test_a_reading_command_on_an_existing_sqlite_file_works(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'group.db'}"
    assert invoke("scale", "q", "3", "--force", "--backend", url).exit_code == 0
    result = invoke("status", "--json", "--backend", url)
    assert result.exit_code == 0, result.output
    assert '"scheduled": 3' in result.stdout


# -- a config without jobs ----------------------------------------------------------------------


@pytest.mark.parametrize("jobs", ["jobs:\n", "jobs: {}\n", ""])
def test_run_with_no_jobs_warns_in_one_line_and_keeps_running(tmp_path, spawn, jobs: str) -> None:
    config = tmp_path / "pb.yml"
    config.write_text(
        f"global:\n  backend: sqlite:///{tmp_path / 'group.db'}\n  namespace: nojobs\n{jobs}"
    )
    proc = spawn(config, "p")
    warning = wait_until(
        lambda: next((line for line in proc.log().splitlines() if "names no jobs" in line), None),
        15,
        message="the no-jobs warning",
    )
    assert " WARNING " in warning
    assert warning.endswith(
        f"{config} names no jobs (`jobs:` is empty or missing): this process joins namespace "
        "nojobs but runs nothing; add entries such as "
        "`jobs: {my_job: {class: myapp.jobs:MyJob}}`"
    )
    assert proc.popen.poll() is None


def test_the_help_summaries_are_the_commands_own_first_paragraphs() -> None:
    import importlib

    from process_balancer.cli import COMMANDS, SUMMARIES

    assert list(SUMMARIES) == list(COMMANDS)
    for name, target in COMMANDS.items():
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(f"process_balancer.cli.{module}"), attribute)
        assert command.name == name
        assert SUMMARIES[name] == " ".join(command.help.split("\n\n")[0].split()), name


def test_version_and_the_package_import_nothing_heavy() -> None:
    """``import process_balancer`` loads no runtime, backend or config module, and
    ``--version`` imports no subcommand: both start in a blink."""
    import subprocess
    import sys

    code = (
        "import sys, process_balancer; "
        "print(sorted(m for m in sys.modules if m.startswith('process_balancer')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['process_balancer']"
    import process_balancer

    # Every lazily loaded public name is listed, and loads.
    assert sorted(process_balancer.__all__) == sorted([*process_balancer._LAZY, "__version__"])
    assert all(getattr(process_balancer, name) is not None for name in process_balancer.__all__)
    code = (
        "import sys; from process_balancer.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('process_balancer')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "['process_balancer', 'process_balancer.cli']"
