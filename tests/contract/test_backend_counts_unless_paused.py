"""The contract of ``set_count_unless_paused`` every backend keeps: it sets a count as
``set_count`` does, unless the job is paused, in one atomic step; a paused job keeps its count
(0), the count it resumes to, and the group's version. A value ``set_count`` refuses is
refused the same way, paused or not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from process_balancer.backends import Backend, open_backend

pytestmark = pytest.mark.backends(in_process=True)


@pytest.fixture
def backend(backend_url: str, namespace: str) -> Iterator[Backend]:
    b = open_backend(backend_url, namespace)
    yield b
    b.close()


def test_a_paused_job_is_left_as_it_is(backend: Backend) -> None:
    backend.set_count("j", to=4, by=None, default=2)
    assert backend.pause("j", default=2) == 4
    version = backend.snapshot().version
    assert backend.set_count_unless_paused("j", to=7, by=None, default=2) is None
    assert backend.set_count_unless_paused("j", to=None, by=3, default=2) is None
    assert backend.get_count("j") == 0
    assert backend.paused_counts() == {"j": 4}
    assert backend.snapshot().version == version
    # The pause still ends as it does, with the count it remembered.
    assert backend.resume("j") == 4
    assert backend.get_count("j") == 4


def test_a_job_paused_with_no_runtime_count_is_left_as_it_is(backend: Backend) -> None:
    assert backend.pause("j", default=2) == 2
    version = backend.snapshot().version
    assert backend.set_count_unless_paused("j", to=5, by=None, default=2, maximum=10) is None
    assert backend.get_count("j") == 0
    assert backend.paused_counts() == {"j": 2}
    assert backend.snapshot().version == version


def test_a_job_that_is_not_paused_gets_the_count(backend: Backend) -> None:
    version = backend.snapshot().version
    assert backend.set_count_unless_paused("j", to=3, by=None, default=2) == 3
    assert backend.get_count("j") == 3
    assert backend.snapshot().version > version
    assert backend.set_count_unless_paused("j", to=None, by=-1, default=2) == 2
    assert backend.set_count_unless_paused("k", to=None, by=2, default=2) == 4
    assert backend.snapshot().counts == {"j": 2, "k": 4}
    assert backend.paused_counts() == {}


def test_a_resumed_job_gets_the_count_again(backend: Backend) -> None:
    backend.pause("j", default=2)
    assert backend.set_count_unless_paused("j", to=6, by=None, default=2) is None
    backend.resume("j")
    assert backend.set_count_unless_paused("j", to=6, by=None, default=2) == 6
    assert backend.get_count("j") == 6
    assert backend.paused_counts() == {}


def test_the_plain_set_count_still_ends_a_pause(backend: Backend) -> None:
    backend.pause("j", default=2)
    assert backend.set_count("j", to=5, by=None, default=2) == 5
    assert backend.paused_counts() == {}
    assert backend.set_count_unless_paused("j", to=1, by=None, default=2) == 1


@pytest.mark.parametrize("paused", [False, True], ids=["running", "paused"])
@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"to": -1, "by": None}, "a count must be an integer from 0 to 10"),
        ({"to": 11, "by": None}, "a count must be an integer from 0 to 10"),
        ({"to": 2.0, "by": None}, "a count must be an integer from 0 to 10"),
        ({"to": None, "by": 1.5}, "a change must be an integer"),
        ({"to": None, "by": 20}, "above its ceiling of 10"),
        ({"to": None, "by": -50}, "cannot go below 0"),
    ],
    ids=["negative", "above-max", "float", "float-step", "step-above-max", "step-below-0"],
)
def test_a_value_set_count_refuses_is_refused_paused_or_not(
    backend: Backend, paused: bool, change: dict[str, object], match: str
) -> None:
    backend.set_count("j", to=4, by=None, default=2)
    if paused:
        backend.pause("j", default=2)
    counts, pauses = backend.snapshot().counts, backend.paused_counts()
    version = backend.snapshot().version
    with pytest.raises(ValueError, match=match):
        backend.set_count("j", default=2, maximum=10, **change)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        backend.set_count_unless_paused("j", default=2, maximum=10, **change)  # type: ignore[arg-type]
    assert backend.snapshot().counts == counts
    assert backend.paused_counts() == pauses
    assert backend.snapshot().version == version


def test_a_bad_default_is_refused(backend: Backend) -> None:
    version = backend.snapshot().version
    with pytest.raises(ValueError, match="default worker count"):
        backend.set_count_unless_paused("j", to=None, by=1, default=-3, maximum=10)
    assert backend.get_count("j") is None
    assert backend.snapshot().version == version
