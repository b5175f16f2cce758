"""The simulation as a tool: repeatable runs, replays and shrinking, a known limit it finds,
and a re-introduced hole it catches."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from process_balancer.backends.memory.backend import MemoryBackend
from process_balancer.testing.simulation import generate, run, shrink
from process_balancer.testing.simulation.cli import main, replay_command

ROOT = Path(__file__).resolve().parents[2]

DIGEST = """
import hashlib, sys
from process_balancer.testing.simulation import generate, run
h = hashlib.sha256()
for seed in range(12):
    for at, who, text in run(generate(seed), verbose=True).trace:
        h.update(f"{at:.6f}|{who}|{text}\\n".encode())
print(h.hexdigest())
"""


def test_a_seed_replays_the_same_run_in_another_interpreter_with_another_hash_seed() -> None:
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", DIGEST], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_a_seed_runs_the_same_twice_in_one_interpreter() -> None:
    def digest(seed: int) -> str:
        result = run(generate(seed), verbose=True)
        text = "\n".join(f"{at:.6f}|{who}|{line}" for at, who, line in result.trace)
        return hashlib.sha256(text.encode()).hexdigest()

    assert digest(3) == digest(3)
    assert digest(3) != digest(4)


def test_runs_exercise_the_runtime() -> None:
    # Not vacuous: the runs do work, take over slots and refuse stale writes.
    results = [run(generate(seed)) for seed in range(40)]
    assert sum(r.records for r in results) > 5_000
    assert sum(r.refused for r in results) > 0
    assert any("taken over from" in text for r in results for _, _, text in r.trace)
    assert any("new incarnation" in text for r in results for _, _, text in r.trace)


def test_forward_clock_steps_past_the_grace_are_a_known_limit_the_simulation_finds() -> None:
    # docs/simulation.md, "known limits": a newcomer can take a slot over after a large
    # forward step of the backend's clock, before any heartbeat noticed the step.
    result = run(generate(525, large_steps=True))
    assert result.failed
    assert result.violations[0].invariant == "exclusion"
    assert not run(generate(525)).failed


def test_a_release_without_the_token_check_is_caught_shrunk_and_replayable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Re-introduce a hole the hardening fixed: release whatever lock holds the name.
    def release_any(self: MemoryBackend, name: str, token: str) -> bool:
        with self._group() as (group, _):
            if group.locks.pop(name, None) is None:
                return False
            self.store.publish(self.namespace, f"released {name}")
            return True

    monkeypatch.setattr(MemoryBackend, "lock_release", release_any)
    failing = next(r for r in (run(generate(s)) for s in range(300)) if r.failed)
    smaller = shrink(failing, budget=20)
    assert smaller.failed
    assert len(smaller.scenario.active_faults) <= len(failing.scenario.active_faults)
    command = replay_command(smaller.scenario)
    assert command.startswith(f"python bench/simulate.py --seed {failing.scenario.seed}")
    args = command.split()[2:]
    assert main(args) == 1  # the command replays the failure
    assert "VIOLATION" in capsys.readouterr().out


def test_the_bench_prints_one_json_line_and_exits_0_when_every_seed_passes() -> None:
    out = subprocess.run(
        [sys.executable, "bench/simulate.py", "--seeds", "5", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    figures = json.loads(out.stdout)
    assert figures["seeds"] == 5 and figures["failures"] == 0
    assert figures["scenarios_per_s"] > 0
