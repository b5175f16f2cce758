"""``stable_identity`` in the config file and ``run --stable-identity``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from process_balancer.cli.run import run, with_flags
from process_balancer.config.schema import ConfigError, load_config, settings_from
from process_balancer.runtime.stable import StableRun

RULE = (
    "must be 1 to 200 letters, digits and '_', '.', '-', ':' (no '#', which separates a "
    "run's instance), such as 'worker-0' or the pod's name"
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pb.yml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_without_it_there_is_none(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "global: {}\n"), environ={}).stable_identity is None


@pytest.mark.parametrize("name", ["worker-0", "eu.pod_3", "host:slot-2", "a"])
def test_a_stable_identity_is_read(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f"global:\n  stable_identity: '{name}'\n")
    assert load_config(path, environ={}).stable_identity == name


def test_an_environment_may_set_its_own(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        global:
          stable_identity: dev-0
        environments:
          production:
            stable_identity: prod-0
        """,
    )
    assert load_config(path, environ={}).stable_identity == "dev-0"
    assert load_config(path, env="production", environ={}).stable_identity == "prod-0"


@pytest.mark.parametrize(
    ("value", "shown"),
    [("'a#1'", "'a#1'"), ("''", "''"), ("'a b'", "'a b'"), ("3", "3"), ("[a]", "a list")],
)
def test_a_bad_stable_identity_names_the_setting_and_the_rule(
    tmp_path: Path, value: str, shown: str
) -> None:
    path = write(tmp_path, f"global:\n  stable_identity: {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.problems == (f"{path}: global.stable_identity: {RULE}, got {shown}",)


def test_settings_from_validates_it() -> None:
    assert settings_from(backend="sqlite:///x.sqlite3", stable_identity="w-1", environ={})
    with pytest.raises(ConfigError, match="stable_identity: must be 1 to 200"):
        settings_from(backend="sqlite:///x.sqlite3", stable_identity="w#1", environ={})


def test_the_flag_wins_over_the_config(tmp_path: Path) -> None:
    path = write(tmp_path, "global:\n  stable_identity: from-file\n")
    settings = load_config(path, environ={})
    assert with_flags(settings, (), None).stable_identity == "from-file"
    assert with_flags(settings, (), "from-flag").stable_identity == "from-flag"


@pytest.mark.parametrize("name", ["a#1", "", "a b"])
def test_a_bad_flag_is_refused_naming_it(tmp_path: Path, name: str) -> None:
    missing = str(tmp_path / "missing.yml")
    result = CliRunner().invoke(run, ["--stable-identity", name, "-c", missing])
    assert result.exit_code == 2
    assert f"--stable-identity: {RULE}, got {name!r}" in " ".join(result.output.split())


def test_each_run_draws_its_own_instance_and_holds_its_locks_as_name_hash_instance() -> None:
    first, second = StableRun.start("w-0"), StableRun.start("w-0")
    assert first.instance != second.instance
    assert first.holder == f"w-0#{first.instance}"
    assert len(first.instance) == 8
