"""Seeds 1000-1999 of the simulation (see test_seeds_first.py)."""

from __future__ import annotations

import pytest

from support.seed_runs import check_seeds


@pytest.mark.timeout(600)
def test_seeds_1000_to_1999_keep_every_promise() -> None:
    check_seeds(1000, 1000)
