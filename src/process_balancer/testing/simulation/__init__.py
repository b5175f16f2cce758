"""Deterministic simulation of a process-balancer group: the real runtime of several
processes on one simulated clock, a seeded scheduler, injected faults, and the group's
promises checked as it runs. See docs/simulation.md.

    from process_balancer.testing.simulation import generate, run
    result = run(generate(seed=42))
    assert not result.failed, format_result(result)
"""

from .run import Result, format_result, run, settle_bound, shrink
from .scenario import Fault, Scenario, generate

__all__ = [
    "Fault",
    "Result",
    "Scenario",
    "format_result",
    "generate",
    "run",
    "settle_bound",
    "shrink",
]
