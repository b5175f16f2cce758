"""Seeds 0-999 of the simulation (the other half is in test_seeds_second.py, so the two run
side by side under pytest-xdist)."""

from __future__ import annotations

import pytest

from support.seed_runs import check_seeds


@pytest.mark.timeout(600)
def test_seeds_0_to_999_keep_every_promise() -> None:
    check_seeds(0, 1000)
