"""How long one assignment takes when counts are at their ceiling.

Every process computes the assignment on its heartbeat thread when the group's state changes,
so it must stay well under the heartbeat interval even at ``max_workers`` (10,000 by default)
and at the hard limit a job's own ``max_workers`` may reach (1,000,000). Each case is timed
fresh (no previous assignment) and sticky (the previous one fed back, as in a running group).

Baseline, in the same run: ``tuple(range(N))`` for the same total number of slots, the least
any function returning every index must spend. No server needed.

    python bench/assign_ceiling.py [--repeat 5] [--hard-limit]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from process_balancer.balancing.assign import Member, assign
from process_balancer.config.defaults import MAX_WORKERS, MAX_WORKERS_HARD_LIMIT


def median_ms(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def members(n: int, capacity: int) -> list[Member]:
    return [Member(f"host{i:05d}:{i}:x", capacity) for i in range(n)]


def case(name: str, fleet: list[Member], counts: dict[str, int], repeat: int) -> None:
    first = assign(fleet, counts)
    fresh = median_ms(lambda: assign(fleet, counts), repeat)
    sticky = median_ms(lambda: assign(fleet, counts, previous=first), repeat)
    total = sum(counts.values())
    floor = median_ms(lambda: tuple(range(total)), repeat)
    placed = sum(len(indexes) for per_job in first.slots.values() for indexes in per_job.values())
    print(
        f"{name:<44} {fresh:9.1f} {sticky:9.1f} {floor:9.1f}   "
        f"{placed:>9,} placed, {total - placed:>9,} unplaced"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--hard-limit", action="store_true", help="also 10 jobs at 1,000,000")
    args = parser.parse_args()
    top, hard = MAX_WORKERS, MAX_WORKERS_HARD_LIMIT
    header = "case (processes x max_threads)"
    print(f"{header:<44} {'fresh ms':>9} {'sticky ms':>9} {'range ms':>9}")
    case(f"1 job x {top:,} over 10 x 10", members(10, 10), {"j": top}, args.repeat)
    case(f"1 job x {top:,} over 1,000 x 10", members(1000, 10), {"j": top}, args.repeat)
    jobs = {f"job{n}": top for n in range(10)}
    case(f"10 jobs x {top:,} over 10 x 10", members(10, 10), jobs, args.repeat)
    case(f"10 jobs x {top:,} over 1,000 x 10", members(1000, 10), jobs, args.repeat)
    case(f"10 jobs x {top:,} over 1,000 x 100", members(1000, 100), jobs, args.repeat)
    case(f"1 job x {hard:,} over 1,000 x 10", members(1000, 10), {"j": hard}, args.repeat)
    if args.hard_limit:
        jobs = {f"job{n}": hard for n in range(10)}
        case(f"10 jobs x {hard:,} over 1,000 x 10", members(1000, 10), jobs, args.repeat)


if __name__ == "__main__":
    main()
