"""``python bench/simulate.py``: run many seeds, or replay one with its trace.

    python bench/simulate.py --seeds 2000 --json      # {"seeds": ..., "failures": ..., ...}
    python bench/simulate.py --seed 1592 --large-steps --trace all
    python bench/simulate.py --seed 1592 --large-steps --faults 1,2 --no-noise

A failing seed is shrunk (faults dropped while it still fails) and printed with the one
command that replays the smallest failing scenario.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from .run import Result, format_result, run, shrink
from .scenario import Scenario, generate


def replay_command(scenario: Scenario) -> str:
    parts = ["python bench/simulate.py", f"--seed {scenario.seed}"]
    if scenario.large_steps:
        parts.append("--large-steps")
    if scenario.kept is not None:
        parts.append(f"--faults {','.join(map(str, scenario.kept)) or 'none'}")
    if not scenario.noise and generate(scenario.seed, large_steps=scenario.large_steps).noise:
        parts.append("--no-noise")
    return " ".join(parts)


def scenario_of(seed: int, *, large_steps: bool, faults: str | None, noise: bool) -> Scenario:
    scenario = generate(seed, large_steps=large_steps)
    if faults is not None:
        kept = () if faults == "none" else tuple(int(i) for i in faults.split(",") if i)
        bad = [i for i in kept if not 0 <= i < len(scenario.faults)]
        if bad:
            raise SystemExit(
                f"--faults: seed {seed} has faults 0 to {len(scenario.faults) - 1}, not {bad}"
            )
        scenario = scenario.keep(kept, noise=noise)
    elif not noise:
        scenario = scenario.keep(tuple(range(len(scenario.faults))), noise=False)
    return scenario


def report_failure(result: Result, *, shrink_it: bool, lines: int) -> None:
    if shrink_it:
        smaller = shrink(result)
        if smaller is not result:
            kept = len(smaller.scenario.active_faults)
            print(f"seed {result.scenario.seed} shrunk to {kept} fault(s)")
            result = smaller
    print(format_result(result, lines=lines))
    print(f"replay: {replay_command(result.scenario)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/simulate.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=2000, help="how many seeds (default 2000)")
    parser.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--seed", type=int, help="replay this one seed and print its trace")
    parser.add_argument("--faults", help="with --seed: keep only these faults (0,2 or none)")
    parser.add_argument("--no-noise", action="store_true", help="no slow/lost/late calls")
    parser.add_argument(
        "--large-steps",
        action="store_true",
        help="also draw forward clock steps past the grace (a known limit; see docs)",
    )
    parser.add_argument("--trace", default="60", help="trace lines shown: a number or all")
    parser.add_argument("--verbose", action="store_true", help="INFO log lines in the trace too")
    parser.add_argument("--no-shrink", action="store_true", help="print failing seeds as found")
    parser.add_argument("--json", action="store_true", help="print one JSON line of figures")
    args = parser.parse_args(argv)
    lines = 0 if args.trace == "all" else int(args.trace)

    if args.seed is not None:
        scenario = scenario_of(
            args.seed, large_steps=args.large_steps, faults=args.faults, noise=not args.no_noise
        )
        result = run(scenario, verbose=args.verbose)
        print(format_result(result, lines=lines))
        status = "FAILED" if result.failed else "passed"
        print(
            f"{status}: {result.steps} steps, {result.simulated:.1f} simulated seconds, "
            f"{result.records} records ({result.refused} refused writes)"
        )
        return 1 if result.failed else 0

    failures: list[Result] = []
    simulated = 0.0
    started = time.perf_counter()
    for seed in range(args.start, args.start + args.seeds):
        result = run(generate(seed, large_steps=args.large_steps))
        simulated += result.simulated
        if result.failed:
            failures.append(result)
            if not args.json:
                report_failure(result, shrink_it=not args.no_shrink, lines=lines)
    elapsed = time.perf_counter() - started
    figures = {
        "seeds": args.seeds,
        "failures": len(failures),
        "scenarios_per_s": round(args.seeds / elapsed, 1),
    }
    if args.json:
        print(json.dumps(figures))
        if failures:
            seeds = ", ".join(str(r.scenario.seed) for r in failures)
            print(f"failed seeds: {seeds} (replay one with --seed N)", file=sys.stderr)
    else:
        print(
            f"{args.seeds} seeds from {args.start}: {len(failures)} failed, "
            f"{elapsed:.1f}s ({figures['scenarios_per_s']} scenarios/s); "
            f"{simulated:.0f} simulated seconds, {simulated / elapsed:.0f}x real time"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
