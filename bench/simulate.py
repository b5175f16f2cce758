"""Deterministic simulation of a process-balancer group, many seeds at a time.

Runs the real runtime of several processes on a simulated clock with a seeded scheduler and
injected faults (see docs/simulation.md) and checks the group's promises as it goes. Prints
the failures (shrunk, each with the command that replays it) and the throughput beside the
simulated time it covered (how many times faster than real time).

    python bench/simulate.py --seeds 2000 [--json]
    python bench/simulate.py --seed 42 --trace all --verbose
"""

from __future__ import annotations

import sys

from process_balancer.testing.simulation.cli import main

if __name__ == "__main__":
    sys.exit(main())
