"""Does the simulation find real bugs? Re-introduce holes that were fixed, one at a time, in a
scratch copy of the source tree, and count the seeds the simulation needs to catch each.

Every mutation below undoes one fix (its ``find`` text must occur exactly once in the file, so
a refactoring that moves the code makes this script fail loudly instead of testing nothing).
For each, the simulation runs seeds from 0 in a separate interpreter whose ``PYTHONPATH``
points at the mutated copy, and stops at the first failing seed.

    python bench/sim_mutations.py [--max-seeds 2000] [--only NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "process_balancer"


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    path: str  # inside src/process_balancer
    find: str
    replace: str
    #: More (path, find, replace) edits made with the first one.
    more: tuple[tuple[str, str, str], ...] = ()


MUTATIONS = [
    Mutation(
        "lease-outlives-membership",
        "a holder is cut off only when its lock expires, not when its membership may have "
        "(neither by the lease watcher nor on rejoining)",
        "runtime/leases.py",
        "            lease.deadline = min(lease.lock_until, valid_until)\n"
        "            if now >= lease.deadline - lease.margin:",
        "            lease.deadline = lease.lock_until\n"
        "            if now >= lease.deadline - lease.margin:",
        more=(
            (
                "runtime/leases.py",
                "        lease.deadline = min(lock_until, self._membership.valid_until)",
                "        lease.deadline = lock_until",
            ),
            (
                "runtime/manager.py",
                "        if self._joined_once and result.joined:\n            reasons.append(",
                "        if False:\n            reasons.append(",
            ),
            (
                "runtime/manager.py",
                "        elif late:\n            reasons.append(",
                "        elif False:\n            reasons.append(",
            ),
        ),
    ),
    Mutation(
        "fence-resets-with-backend",
        "the fencing counter starts again from 1 when the backend forgets the group",
        "backends/memory/backend.py",
        "fence = max(group.fences.get(name, 0) + 1, int(now * 1_000_000))",
        "fence = group.fences.get(name, 0) + 1",
    ),
    Mutation(
        "release-without-token",
        "releasing a worker lock does not check that it is still the caller's",
        "backends/memory/backend.py",
        "            if lock is None or lock.expires_at <= now or lock.token != token:\n"
        "                return False\n"
        "            del group.locks[name]",
        "            if lock is None or lock.expires_at <= now:\n"
        "                return False\n"
        "            del group.locks[name]",
    ),
    Mutation(
        "membership-from-answer",
        "the membership deadline is counted from the heartbeat's answer, not from its sending",
        "runtime/manager.py",
        "        self.membership.extend(sent_at, self.settings.process_expiry)",
        "        self.membership.extend(received_at, self.settings.process_expiry)",
    ),
    Mutation(
        "no-hold-after-loss",
        "a new incarnation (the backend lost the group) grants worker locks at once",
        "backends/memory/backend.py",
        "                group.grants_at = now + hold if why else 0.0",
        "                group.grants_at = 0.0",
    ),
    Mutation(
        "stale-slots-after-loss",
        "a process keeps the slots of the old incarnation when the new one reached its version",
        "runtime/manager.py",
        "            if self.incarnation and result.slots is None:",
        "            if False:",
    ),
    Mutation(
        "grant-after-restart",
        "a backend restarted from an older copy of its state grants locks before a heartbeat",
        "backends/memory/backend.py",
        "                or group.server != self.store.run_id\n",
        "",
    ),
    Mutation(
        "no-generation-gate",
        "a partitioned job's lock is taken without its generation gate: the slots of a new "
        "count may start while those of the old one still run",
        "locks/simple_redis.py",
        "                gate=self.gate,\n",
        "                gate=None,\n",
    ),
    Mutation(
        "gate-opens-early",
        "the backend moves a partitioned job's gate to a new generation without waiting for "
        "the locks of the old one",
        "backends/memory/locks.py",
        "    if not all(lock_is_free(group, name, now, grace) for name in record.names):",
        "    if False:",
    ),
    Mutation(
        "no-supersede-check",
        "a run of a stable identity that was cut off past its membership, or that heartbeats "
        "in turn with another run of its name, never checks whether a newer run holds the name",
        "runtime/manager.py",
        "        doubt = late or self._name_contested\n",
        "        doubt = False\n",
    ),
]

RUNNER = """
import json, sys
from process_balancer.testing.simulation import generate, run
for seed in range(int(sys.argv[1])):
    result = run(generate(seed))
    if result.failed:
        v = result.violations[0]
        print(json.dumps({"seeds": seed + 1, "seed": seed, "invariant": v.invariant,
                          "detail": v.detail[:160]}))
        break
else:
    print(json.dumps({"seeds": int(sys.argv[1]), "seed": None}))
"""


def mutate(mutation: Mutation, scratch: Path) -> Path:
    tree = scratch / mutation.name
    shutil.copytree(
        PACKAGE, tree / "process_balancer", ignore=shutil.ignore_patterns("__pycache__")
    )
    for path, find, replace in ((mutation.path, mutation.find, mutation.replace), *mutation.more):
        target = tree / "process_balancer" / path
        text = target.read_text()
        found = text.count(find)
        if found != 1:
            raise SystemExit(
                f"{mutation.name}: the text to change occurs {found} times in {path}; "
                "update this mutation to the current code"
            )
        target.write_text(text.replace(find, replace))
    return tree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-seeds", type=int, default=2000)
    parser.add_argument("--only", help="run only this mutation")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if args.only in (None, m.name)]
    if not chosen:
        raise SystemExit(f"--only: no mutation {args.only!r}; have {[m.name for m in MUTATIONS]}")
    missed = 0
    with tempfile.TemporaryDirectory(prefix="pb-mutations-") as scratch:
        # The unmutated tree first: it must pass, or the counts below mean nothing.
        for mutation in [None, *chosen]:
            if mutation is None:
                tree, name, what = PACKAGE.parent, "unmutated", "the code as it is"
            else:
                tree, name, what = mutate(mutation, Path(scratch)), mutation.name, mutation.what
            env = {**os.environ, "PYTHONPATH": str(tree)}
            started = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", RUNNER, str(args.max_seeds)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            found = json.loads(out.stdout.strip().splitlines()[-1])
            took = time.perf_counter() - started
            if found["seed"] is None:
                verdict = f"not caught in {found['seeds']} seeds"
                missed += mutation is not None
            else:
                verdict = (
                    f"caught at seed {found['seed']} ({found['seeds']} seeds run): "
                    f"{found['invariant']}: {found['detail']}"
                )
                if mutation is None:
                    missed += 1
            print(f"{name:28} {verdict} [{took:.1f}s]\n{'':28} ({what})", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
