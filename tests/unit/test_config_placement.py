"""Process tags, job placement rules and slot weights in the config file and on ``run``."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from process_balancer.cli.run import run
from process_balancer.config.schema import ConfigError, Settings, load_config, settings_from


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str], Path]:
    def make(text: str) -> Path:
        path = tmp_path / "pb.yml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return make


def load(path: Path, env: str | None = None) -> Settings:
    return load_config(path, env=env, environ={})


def one_problem(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert len(caught.value.problems) == 1, caught.value.problems
    return caught.value.problems[0]


def job(extra: str) -> str:
    return "jobs:\n  q:\n    class: m:C\n" + textwrap.indent(textwrap.dedent(extra), "    ")


# -- process tags ------------------------------------------------------------------------------


def test_tags_default_to_none_and_are_sorted_without_repeats(write: Callable[..., Path]) -> None:
    assert load(write("global: {}\n")).tags == ()
    assert load(write("global:\n  tags: [ssd, gpu, ssd]\n")).tags == ("gpu", "ssd")


def test_an_environment_replaces_the_global_tags(write: Callable[..., Path]) -> None:
    path = write(
        """
        global:
          tags: [gpu]
        environments:
          production:
            tags: [eu-west, zone=eu-west-1a]
        """
    )
    assert load(path).tags == ("gpu",)
    assert load(path, env="production").tags == ("eu-west", "zone=eu-west-1a")


def test_a_single_tag_string_is_refused_with_the_list_to_write(
    write: Callable[..., Path],
) -> None:
    path = write("global:\n  tags: gpu\n")
    assert one_problem(path) == (
        f"{path}: global.tags: must be a list of tags such as [gpu, eu-west], got 'gpu'; "
        "write it as a list: [gpu]"
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [("['gp u']", "'gp u'"), ("[3]", "3"), ("['']", "''"), ("[[gpu]]", "a list")],
)
def test_a_bad_tag_names_itself_and_the_rule(
    write: Callable[..., Path], value: str, shown: str
) -> None:
    path = write(f"global:\n  tags: {value}\n")
    assert one_problem(path) == (
        f"{path}: global.tags: {shown} is not a tag: a tag is 1 to 100 letters, digits and "
        "'_', '.', '-', ':', '=', '/'"
    )


def test_too_many_tags_are_refused(write: Callable[..., Path]) -> None:
    path = write("global:\n  tags: [" + ", ".join(f"t{n}" for n in range(101)) + "]\n")
    assert one_problem(path) == f"{path}: global.tags: holds 101 tags; at most 100 are allowed"


def test_settings_from_accepts_tags() -> None:
    assert settings_from(backend="sqlite:///x.sqlite3", tags=["b", "a"], environ={}).tags == (
        "a",
        "b",
    )


def test_published_placement_traits_name_tags_and_only_jobs_with_a_rule(
    write: Callable[..., Path],
) -> None:
    path = write(
        """
        global:
          tags: [gpu]
        jobs:
          plain: {class: m:C}
          train: {class: m:C, placement: {require: [gpu], prefer: [eu]}, weight: 2.5}
        """
    )
    assert load(path).placement_traits() == {
        "tags": ["gpu"],
        "placement": {"train": {"require": ["gpu"], "prefer": ["eu"], "weight": 2.5}},
    }


# -- job placement -----------------------------------------------------------------------------


def test_a_job_without_placement_or_weight_runs_anywhere_at_weight_one(
    write: Callable[..., Path],
) -> None:
    config = load(write(job(""))).jobs["q"]
    assert (config.require, config.prefer, config.weight) == ((), (), 1.0)


def test_placement_require_and_prefer_are_read(write: Callable[..., Path]) -> None:
    config = load(write(job("placement: {require: [gpu, ssd], prefer: [eu-west]}\n"))).jobs["q"]
    assert (config.require, config.prefer) == (("gpu", "ssd"), ("eu-west",))
    assert config.options["placement"] == {"require": ["gpu", "ssd"], "prefer": ["eu-west"]}


def test_placement_that_is_not_a_mapping_shows_the_form(write: Callable[..., Path]) -> None:
    path = write(job("placement: [gpu]\n"))
    assert one_problem(path) == (
        f"{path}: jobs.q.placement: must be a mapping such as "
        "{require: [gpu], prefer: [eu-west]}, got a list"
    )


def test_an_unknown_placement_key_suggests_the_closest(write: Callable[..., Path]) -> None:
    path = write(job("placement: {requires: [gpu]}\n"))
    assert one_problem(path) == (
        f"{path}: jobs.q.placement.requires: unknown placement key; did you mean 'require'? "
        "allowed keys: require, prefer"
    )


def test_required_tags_must_be_a_list_of_tags(write: Callable[..., Path]) -> None:
    path = write(job("placement: {require: gpu}\n"))
    assert one_problem(path) == (
        f"{path}: jobs.q.placement.require: must be a list of tags such as [gpu, eu-west], "
        "got 'gpu'; write it as a list: [gpu]"
    )


def test_a_tag_both_required_and_preferred_is_refused(write: Callable[..., Path]) -> None:
    path = write(job("placement: {require: [gpu], prefer: [gpu, eu]}\n"))
    assert one_problem(path) == (
        f"{path}: jobs.q.placement.prefer: gpu is required already; list a tag under require "
        "(only processes with it run the job) or prefer (they run it first), not both"
    )


@pytest.mark.parametrize("value", ["2", "0.5", "10"])
def test_a_positive_weight_is_accepted(write: Callable[..., Path], value: str) -> None:
    assert load(write(job(f"weight: {value}\n"))).jobs["q"].weight == float(value)


@pytest.mark.parametrize(
    ("value", "shown"),
    [("0", "0"), ("-1", "-1"), ("true", "true"), ("heavy", "'heavy'"), (".inf", "inf")],
)
def test_a_weight_that_is_not_a_positive_number_is_refused(
    write: Callable[..., Path], value: str, shown: str
) -> None:
    path = write(job(f"weight: {value}\n"))
    assert one_problem(path) == (
        f"{path}: jobs.q.weight: must be a positive number: what one slot of this job costs "
        f"compared with a slot of another job (default 1), got {shown}"
    )


# -- run --tag ---------------------------------------------------------------------------------


def test_run_refuses_a_bad_tag_before_reading_the_config(tmp_path: Path) -> None:
    result = CliRunner().invoke(run, ["--tag", "gp u", "-c", str(tmp_path / "missing.yml")])
    assert result.exit_code == 2
    assert "--tag: 'gp u' is not a tag: a tag is 1 to 100 letters" in result.output
