"""The module-level API on the in-memory backend: worker counts and their validation."""

from __future__ import annotations

from pathlib import Path

import pytest

import process_balancer


@pytest.fixture
def configured(tmp_path: Path, namespace: str):
    config = tmp_path / "process_balancer.yml"
    config.write_text(
        f"global:\n  backend: memory://{namespace}\n  namespace: {namespace}\n  max_workers: 50\n"
        "jobs:\n  q:\n    class: support.jobs:RecordingJob\n    workers: 4\n"
        "    max_workers: 8\n"
        "  plain:\n    class: support.jobs:RecordingJob\n"
    )
    return process_balancer.configure(config)


def test_scheduled_workers_falls_back_to_config_then_one(configured) -> None:
    assert process_balancer.scheduled_workers("q") == 4
    assert process_balancer.scheduled_workers("plain") == 1


def test_adjust_to_and_by(configured) -> None:
    assert process_balancer.adjust_scheduled_workers("q", to=6) == 6
    assert process_balancer.adjust_scheduled_workers("q", by=-2) == 4
    assert process_balancer.scheduled_workers("q") == 4


def test_adjust_by_starts_from_the_config_count(configured) -> None:
    assert process_balancer.adjust_scheduled_workers("q", by=1) == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"to": 1, "by": 1},
        {"to": -1},
        {"to": 2.5},
        {"to": "3"},
        {"to": True},
        {"by": 0.5},
        {"to": 9},
        {"to": 99999999999999999999999},
        {"to": 1e23},
        {"by": 99999999999999999999999},
        {"by": 5},
    ],
)
def test_bad_counts_raise_and_write_nothing(configured, kwargs) -> None:
    with pytest.raises(ValueError):
        process_balancer.adjust_scheduled_workers("q", **kwargs)
    assert configured.backend.get_count("q") is None


def test_change_below_zero_raises_and_keeps_the_count(configured) -> None:
    process_balancer.adjust_scheduled_workers("q", to=2)
    with pytest.raises(ValueError, match="below 0"):
        process_balancer.adjust_scheduled_workers("q", by=-3)
    assert process_balancer.scheduled_workers("q") == 2


def test_bad_job_id_raises(configured) -> None:
    with pytest.raises(ValueError, match="job_id"):
        process_balancer.adjust_scheduled_workers("", to=1)


def test_running_workers_is_zero_without_processes(configured) -> None:
    assert process_balancer.running_workers("q") == 0


def test_unknown_remote_command_raises(configured) -> None:
    with pytest.raises(ValueError, match="unknown command"):
        process_balancer.send_command("h:1:x", "explode")


def test_command_to_a_process_that_is_not_live_returns_false(configured) -> None:
    assert process_balancer.send_command("h:1:x", "quiet") is False


def test_configure_from_backend_and_namespace(namespace: str) -> None:
    client = process_balancer.configure(backend=f"memory://{namespace}", namespace=namespace)
    assert client.settings.namespace == namespace
    assert process_balancer.scheduled_workers("anything") == 1


def test_a_count_above_the_jobs_max_workers_names_it(configured) -> None:
    with pytest.raises(ValueError) as caught:
        process_balancer.adjust_scheduled_workers("q", to=99999999999999999999999)
    assert str(caught.value) == (
        "to must be at most 8 (the max_workers of job 'q'), got 99999999999999999999999; "
        "nothing was changed"
    )
    assert process_balancer.adjust_scheduled_workers("q", to=8) == 8


def test_a_job_the_config_does_not_have_gets_the_global_ceiling(configured) -> None:
    assert configured.max_workers("elsewhere") == 50
    with pytest.raises(ValueError, match=r"at most 50 \(max_workers\), got 51"):
        process_balancer.adjust_scheduled_workers("elsewhere", to=51)
    assert process_balancer.adjust_scheduled_workers("elsewhere", to=50) == 50


def test_a_change_past_the_ceiling_is_refused_by_the_backend(configured) -> None:
    process_balancer.adjust_scheduled_workers("q", to=7)
    with pytest.raises(ValueError, match=r"the result, 9, would be above its ceiling of 8"):
        process_balancer.adjust_scheduled_workers("q", by=2)
    assert process_balancer.scheduled_workers("q") == 7


def test_pause_and_resume_pass_the_ceiling(configured, namespace: str) -> None:
    wider = process_balancer.Client(
        process_balancer.config.schema.settings_from(
            backend=f"memory://{namespace}", namespace=namespace, max_workers=100
        )
    )
    try:
        wider.adjust_scheduled_workers("q", to=20)
        with pytest.raises(ValueError, match="cannot pause job 'q': its count, 20, is above"):
            configured.pause("q")
        assert wider.pause("q") == 20
        with pytest.raises(ValueError, match="cannot resume job 'q' with 20 workers"):
            configured.resume("q")
        assert configured.backend.paused_counts() == {"q": 20}
    finally:
        wider.close()
