"""Running a range of seeds as one test, with a readable failure: the first failing seed,
shrunk, its trace and the command that replays it."""

from __future__ import annotations

from process_balancer.testing.simulation import format_result, generate, run, shrink
from process_balancer.testing.simulation.cli import replay_command


def check_seeds(start: int, count: int) -> None:
    failed = []
    for seed in range(start, start + count):
        result = run(generate(seed))
        if result.failed:
            failed.append(result)
    if failed:
        smallest = shrink(failed[0])
        seeds = ", ".join(str(r.scenario.seed) for r in failed)
        raise AssertionError(
            f"{len(failed)} of {count} seeds failed ({seeds}); the first, shrunk:\n"
            f"{format_result(smallest)}\nreplay: {replay_command(smallest.scenario)}"
        )
