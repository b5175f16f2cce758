"""What placement costs at 10,000 slots, beside the assignment before it, in the same run.

Three fleets of 1,000 processes x 10 threads (10,000 slots of capacity) and 10,000 slots:

* everywhere: 10 jobs of 1,000 slots, every process runs every job (nothing constrains);
* job sets: jobs a and b, 5,000 slots each; 500 processes run both, 500 run only a;
* gpu tag: 9 jobs of 1,000 slots anywhere and ``train`` (1,000 slots) requiring tag gpu,
  which 100 processes have;

and one of 100 processes x 200 threads (room to spare) with 1,000 jobs of 10 slots, every
tenth of weight 10 (weights: the spare slots of each job's rounding decide where it runs).

For each: one assignment from scratch (fresh), the same fed its result (sticky), and one
process leaving (leave); slots placed, slots that changed owner on the leave beyond the
leaver's own, and the busiest process's weighted load over the mean. The baseline is
``balancing/assign.py`` as it was before placement, read from git (``--baseline REV``,
default the parent of the commit that added ``balancing/flow.py``); it has no tags, so there
a process without gpu simply does not run ``train`` (the same constraint, as a job set).
Needs a git checkout; no server.

    python bench/placement.py [--repeat 5] [--baseline REV]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from process_balancer.balancing.assign import JobPlacement, Member, assign, moves

ROOT = Path(__file__).resolve().parent.parent
ASSIGN_PATH = "src/process_balancer/balancing/assign.py"


def baseline_module(rev: str | None) -> tuple[types.ModuleType, str]:
    if rev is None:
        added = subprocess.run(
            [
                "git",
                "log",
                "--diff-filter=A",
                "--format=%H",
                "--",
                "src/process_balancer/balancing/flow.py",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if not added:
            sys.exit("cannot find the commit that added balancing/flow.py; pass --baseline REV")
        rev = f"{added[-1]}^"
    source = subprocess.run(
        ["git", "show", f"{rev}:{ASSIGN_PATH}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType("assign_before")
    sys.modules[module.__name__] = module
    exec(compile(source, f"{rev}:{ASSIGN_PATH}", "exec"), module.__dict__)
    short = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    return module, short


def median_ms(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


Fleet = list[tuple[str, int, frozenset[str] | None, frozenset[str]]]


def everywhere() -> tuple[Fleet, dict[str, int], dict[str, JobPlacement]]:
    fleet: Fleet = [(f"h{i:04d}:{i}:x", 10, None, frozenset()) for i in range(1000)]
    return fleet, {f"job{n}": 1000 for n in range(10)}, {}


def job_sets() -> tuple[Fleet, dict[str, int], dict[str, JobPlacement]]:
    fleet: Fleet = [
        (f"h{i:04d}:{i}:x", 10, None if i % 2 else frozenset({"a"}), frozenset())
        for i in range(1000)
    ]
    return fleet, {"a": 5000, "b": 5000}, {}


def gpu_tag() -> tuple[Fleet, dict[str, int], dict[str, JobPlacement]]:
    fleet: Fleet = [
        (f"h{i:04d}:{i}:x", 10, None, frozenset({"gpu"}) if i % 10 == 0 else frozenset())
        for i in range(1000)
    ]
    counts = {f"job{n}": 1000 for n in range(9)} | {"train": 1000}
    return fleet, counts, {"train": JobPlacement(require=frozenset({"gpu"}))}


def weighted() -> tuple[Fleet, dict[str, int], dict[str, JobPlacement]]:
    fleet: Fleet = [(f"h{i:03d}:{i}:x", 200, None, frozenset()) for i in range(100)]
    counts = {f"job{n:04d}": 10 for n in range(1000)}
    rules = {job_id: JobPlacement(weight=Fraction(10)) for job_id in list(counts)[::10]}
    return fleet, counts, rules


def load_ratio(result: Any, fleet: Fleet, rules: dict[str, JobPlacement]) -> float:
    load = dict.fromkeys((identity for identity, *_ in fleet), Fraction(0))
    for identity, per_job in result.slots.items():
        for job_id, indexes in per_job.items():
            load[identity] += len(indexes) * rules.get(job_id, JobPlacement()).weight
    return float(max(load.values()) / (sum(load.values()) / len(load)))


def run_case(
    name: str,
    scenario: Callable[[], tuple[Fleet, dict[str, int], dict[str, JobPlacement]]],
    before: types.ModuleType,
    repeat: int,
) -> None:
    fleet, counts, rules = scenario()
    jobs = set(counts)
    now = [Member(identity, cap, True, job_set, tags) for identity, cap, job_set, tags in fleet]
    old: list[Any] = []
    for identity, cap, job_set, tags in fleet:
        allowed = set(jobs if job_set is None else job_set)
        allowed = {j for j in allowed if rules.get(j, JobPlacement()).require <= tags}
        old.append(before.Member(identity, cap, True, frozenset(allowed)))

    def measure(
        label: str, compute: Callable[..., Any], count_moves: Callable[..., int], members: list[Any]
    ) -> None:
        first = compute(members, counts)
        again = compute(members, counts, previous=first)
        leaver = members[0].identity
        after = compute(members[1:], counts, previous=first)
        own = sum(len(indexes) for indexes in first.slots.get(leaver, {}).values())
        fresh = median_ms(lambda: compute(members, counts), repeat)
        sticky = median_ms(lambda: compute(members, counts, previous=first), repeat)
        leave = median_ms(lambda: compute(members[1:], counts, previous=first), repeat)
        placed = sum(len(i) for per_job in first.slots.values() for i in per_job.values())
        stable = "yes" if again == first else "NO"
        print(
            f"{name:<11} {label:<8} {fresh:8.1f} {sticky:9.1f} {leave:8.1f}   {placed:>6,} "
            f"{sum(counts.values()) - placed:>8,}  {count_moves(first, after) - own:>11}  "
            f"{load_ratio(first, fleet, rules):8.2f}  {stable}"
        )

    measure("before", before.assign, before.moves, old)
    measure(
        "now",
        lambda m, c, previous=None: assign(m, c, previous=previous, placement=rules),
        moves,
        now,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline", metavar="REV", help="git revision of the baseline")
    args = parser.parse_args()
    before, rev = baseline_module(args.baseline)
    print(f"baseline: {ASSIGN_PATH} at {rev}; milliseconds, median of {args.repeat}")
    print(
        f"{'case':<11} {'version':<8} {'fresh':>8} {'sticky':>9} {'leave':>8}   {'placed':>6} "
        f"{'unplaced':>8}  {'extra moves':>11}  {'max/mean':>8}  fixed point"
    )
    cases = (("everywhere", everywhere), ("job sets", job_sets), ("gpu tag", gpu_tag))
    for name, scenario in (*cases, ("weighted", weighted)):
        run_case(name, scenario, before, args.repeat)


if __name__ == "__main__":
    main()
