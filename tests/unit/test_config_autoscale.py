"""A job's ``autoscale:`` entry in the config file, and the desired_workers() it requires."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from process_balancer.config.autoscale import AutoscaleConfig
from process_balancer.config.schema import ConfigError, load_config, resolve_job_class


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str], Path]:
    def make(text: str) -> Path:
        path = tmp_path / "pb.yml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return make


def job(extra: str) -> str:
    return "jobs:\n  q:\n    class: m:C\n" + textwrap.indent(textwrap.dedent(extra), "    ")


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    return list(caught.value.problems)


def test_autoscale_takes_min_and_max_with_default_interval_and_cooldown(
    write: Callable[[str], Path],
) -> None:
    settings = load_config(write(job("autoscale: {min: 1, max: 8}")), environ={})
    assert settings.jobs["q"].autoscale == AutoscaleConfig(
        min=1, max=8, interval=15.0, cooldown=60.0
    )
    full = job("autoscale: {min: 0, max: 3, interval: 0.5, cooldown: 0}")
    assert load_config(write(full), environ={}).jobs["q"].autoscale == AutoscaleConfig(
        min=0, max=3, interval=0.5, cooldown=0.0
    )


def test_a_job_without_autoscale_is_not_autoscaled(write: Callable[[str], Path]) -> None:
    assert load_config(write(job("workers: 2")), environ={}).jobs["q"].autoscale is None


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "autoscale: 4",
            "jobs.q.autoscale: must be a mapping such as "
            "{min: 1, max: 10, interval: 15, cooldown: 60}, got 4",
        ),
        (
            "autoscale: {max: 4}",
            "jobs.q.autoscale.min: missing; set the fewest workers the autoscaler may give the "
            "job, e.g. {min: 1, max: 10, interval: 15, cooldown: 60}",
        ),
        (
            "autoscale: {min: 1}",
            "jobs.q.autoscale.max: missing; set the most workers the autoscaler may give the "
            "job, e.g. {min: 1, max: 10, interval: 15, cooldown: 60}",
        ),
        (
            "autoscale: {min: -1, max: 4}",
            "jobs.q.autoscale.min: must be a non-negative integer, got -1",
        ),
        (
            "autoscale: {min: 1, max: 2.5}",
            "jobs.q.autoscale.max: must be a non-negative integer, got 2.5",
        ),
        (
            "autoscale: {min: 5, max: 4}",
            "jobs.q.autoscale.max: 4 is below autoscale.min = 5; raise max or lower min",
        ),
        (
            "autoscale: {min: 1, max: 4, interval: 0}",
            "jobs.q.autoscale.interval: must be a positive number of seconds, got 0",
        ),
        (
            "autoscale: {min: 1, max: 4, cooldown: -1}",
            "jobs.q.autoscale.cooldown: must be a non-negative number of seconds, got -1",
        ),
        (
            "autoscale: {min: 1, max: 4, cooldwn: 5}",
            "jobs.q.autoscale.cooldwn: unknown autoscale key; did you mean 'cooldown'? allowed "
            "keys: min, max, interval, cooldown",
        ),
        (
            "max_workers: 10\nautoscale: {min: 1, max: 20}",
            "jobs.q.autoscale.max: 20 is above the job's ceiling max_workers = 10 "
            "(jobs.q.max_workers); lower autoscale.max or raise max_workers (at most 1,000,000)",
        ),
    ],
)
def test_a_bad_autoscale_entry_names_the_key_and_the_fix(
    write: Callable[[str], Path], entry: str, expected: str
) -> None:
    path = write(job(entry))
    assert problems(path) == [f"{path}: {expected}"]


def test_autoscale_max_is_checked_against_the_global_max_workers(
    write: Callable[[str], Path],
) -> None:
    path = write("global:\n  max_workers: 6\n" + job("autoscale: {min: 1, max: 7}"))
    assert problems(path) == [
        f"{path}: jobs.q.autoscale.max: 7 is above the job's ceiling max_workers = 6 "
        "(global.max_workers); lower autoscale.max or raise max_workers (at most 1,000,000)"
    ]


JOB_MODULE = """
import process_balancer

class Plain(process_balancer.Base):
    pass

class Scaled(process_balancer.Base):
    def desired_workers(self):
        return 3
"""


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = tmp_path / "mods"
    directory.mkdir()
    (directory / "pb_autoscale_jobs.py").write_text(JOB_MODULE)
    monkeypatch.syspath_prepend(str(directory))
    yield directory
    sys.modules.pop("pb_autoscale_jobs", None)


def test_an_autoscaled_class_without_desired_workers_is_a_start_up_error(
    write: Callable[[str], Path], module_dir: Path
) -> None:
    path = write(
        "jobs:\n"
        "  q: {class: 'pb_autoscale_jobs:Plain', autoscale: {min: 1, max: 4}}\n"
        "  r: {class: 'pb_autoscale_jobs:Scaled', autoscale: {min: 1, max: 4}}\n"
    )
    settings = load_config(path, environ={})
    assert resolve_job_class(settings.jobs["r"], path).__name__ == "Scaled"
    with pytest.raises(ConfigError) as caught:
        resolve_job_class(settings.jobs["q"], path)
    assert list(caught.value.problems) == [
        f"{path}: jobs.q.autoscale: class pb_autoscale_jobs.Plain has no desired_workers() "
        "method; define `def desired_workers(self) -> int` on it (the count the autoscaler "
        "aims for, e.g. from a queue's depth) or remove autoscale"
    ]
