"""Placement by tags, weighted slots and the max-flow repair of the pure assignment.

The oracle is an independent max-flow (Edmonds-Karp over processes, not classes) of the
network source -> job (its count) -> every process the job may use -> sink (max_threads).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import deque
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from process_balancer.balancing.assign import Assignment, JobPlacement, Member, assign, moves
from process_balancer.balancing.placement import unplaced_reason

JOBS = ("alpha", "beta", "gamma", "delta")
TAGS = ("gpu", "ssd", "eu")
PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
BIG = 10_000


def max_flow(
    members: list[Member], counts: Mapping[str, int], rules: Mapping[str, JobPlacement]
) -> int:
    """Slots placeable at most: Edmonds-Karp on the process-level network."""
    jobs = [j for j in sorted(counts) if counts[j] > 0]
    nodes = ["s", *(f"j:{j}" for j in jobs), *(f"m:{m.identity}" for m in members), "t"]
    cap: dict[tuple[str, str], int] = {}
    for job_id in jobs:
        cap[("s", f"j:{job_id}")] = counts[job_id]
        rule = rules.get(job_id, JobPlacement())
        for member in members:
            if member.capacity > 0 and rule.admits(member, job_id):
                cap[(f"j:{job_id}", f"m:{member.identity}")] = BIG * BIG
    for member in members:
        cap[(f"m:{member.identity}", "t")] = member.capacity
    adjacent: dict[str, set[str]] = {node: set() for node in nodes}
    for a, b in list(cap):
        adjacent[a].add(b)
        adjacent[b].add(a)
        cap.setdefault((b, a), 0)
    total = 0
    while True:
        parent: dict[str, str | None] = {"s": None}
        queue = deque(["s"])
        while queue and "t" not in parent:
            node = queue.popleft()
            for nxt in adjacent[node]:
                if nxt not in parent and cap[(node, nxt)] > 0:
                    parent[nxt] = node
                    queue.append(nxt)
        if "t" not in parent:
            return total
        path = []
        node = "t"
        while parent[node] is not None:
            prev = parent[node]
            assert prev is not None
            path.append((prev, node))
            node = prev
        amount = min(cap[edge] for edge in path)
        for a, b in path:
            cap[(a, b)] -= amount
            cap[(b, a)] += amount
        total += amount


def placed(result: Assignment, job_id: str | None = None) -> int:
    return sum(
        len(indexes)
        for per_job in result.slots.values()
        for job, indexes in per_job.items()
        if job_id is None or job == job_id
    )


def check_valid(
    members: list[Member],
    counts: Mapping[str, int],
    rules: Mapping[str, JobPlacement],
    result: Assignment,
) -> None:
    by_id = {m.identity: m for m in members}
    for identity, per_job in result.slots.items():
        member = by_id[identity]
        assert sum(map(len, per_job.values())) <= member.capacity, identity
        for job_id in per_job:
            assert rules.get(job_id, JobPlacement()).admits(member, job_id), (identity, job_id)
    for job_id, count in counts.items():
        owned = [i for per_job in result.slots.values() for i in per_job.get(job_id, ())]
        assert sorted(owned + list(result.unplaced.get(job_id, ()))) == list(range(count))


# -- strategies ---------------------------------------------------------------------------------

tag_sets = st.frozensets(st.sampled_from(TAGS), max_size=2)
job_sets = st.one_of(st.none(), st.frozensets(st.sampled_from(JOBS), min_size=1))


@st.composite
def fleets(draw: st.DrawFn, max_members: int = 6, max_capacity: int = 6) -> list[Member]:
    size = draw(st.integers(0, max_members))
    return [
        Member(
            f"h{draw(st.integers(0, 3))}:{n}:x",
            draw(st.integers(0, max_capacity)),
            draw(st.booleans()) or draw(st.booleans()),
            draw(job_sets),
            draw(tag_sets),
        )
        for n in range(size)
    ]


rule_strategy = st.builds(
    JobPlacement,
    require=st.frozensets(st.sampled_from(TAGS), max_size=1),
    prefer=st.frozensets(st.sampled_from(TAGS), max_size=1),
    weight=st.sampled_from([Fraction(1), Fraction(1, 2), Fraction(3), Fraction(10)]),
)
rules_strategy = st.dictionaries(st.sampled_from(JOBS), rule_strategy, max_size=4)
counts_strategy = st.fixed_dictionaries({job_id: st.integers(0, 12) for job_id in JOBS})


# -- properties ---------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(members=fleets(), counts=counts_strategy, rules=rules_strategy)
def test_places_as_many_slots_as_any_assignment_could(
    members: list[Member], counts: dict[str, int], rules: dict[str, JobPlacement]
) -> None:
    """Given any fleet, job sets, tags and capacities, every slot that can be placed is, and
    under a shortage the earlier job ids keep the most they could have (each job gets the
    max flow of the jobs up to it minus that of the jobs before it)."""
    result = assign(members, counts, placement=rules)
    check_valid(members, counts, rules, result)
    assert placed(result) == max_flow(members, counts, rules)
    before = 0
    for n, job_id in enumerate(sorted(counts), start=1):
        prefix = {j: counts[j] for j in sorted(counts)[:n]}
        upto = max_flow(members, prefix, rules)
        assert placed(result, job_id) == upto - before, job_id
        before = upto


@PROPERTY_SETTINGS
@given(
    members=fleets(),
    counts=counts_strategy,
    rules=rules_strategy,
    changed=counts_strategy,
    seed=st.integers(0, 2**32),
)
def test_result_is_a_fixed_point_and_ignores_input_order(
    members: list[Member],
    counts: dict[str, int],
    rules: dict[str, JobPlacement],
    changed: dict[str, int],
    seed: int,
) -> None:
    """Feeding a result back changes nothing, also after a change of counts, and shuffling
    members, counts, rules and the previous assignment gives the same answer."""
    rng = random.Random(seed)
    first = assign(members, counts, placement=rules)
    assert assign(members, counts, previous=first, placement=rules) == first
    second = assign(members, changed, previous=first, placement=rules)
    assert assign(members, changed, previous=second, placement=rules) == second
    shuffled_previous = {
        identity: dict(rng.sample(list(per_job.items()), len(per_job)))
        for identity, per_job in rng.sample(list(first.slots.items()), len(first.slots))
    }
    again = assign(
        rng.sample(members, len(members)),
        dict(rng.sample(list(changed.items()), len(changed))),
        previous=shuffled_previous,
        placement=dict(rng.sample(list(rules.items()), len(rules))),
    )
    assert again == second


@PROPERTY_SETTINGS
@given(
    members=fleets(max_capacity=BIG),
    counts=counts_strategy,
    requires=st.dictionaries(st.sampled_from(JOBS), st.sampled_from(TAGS), max_size=3),
    newcomer_tags=tag_sets,
    newcomer_jobs=job_sets,
)
def test_join_moves_only_what_the_newcomer_takes_when_nothing_binds(
    members: list[Member],
    counts: dict[str, int],
    requires: dict[str, str],
    newcomer_tags: frozenset[str],
    newcomer_jobs: frozenset[str] | None,
) -> None:
    """Given required tags but capacity that never binds, when a process joins, every slot
    that moves goes to the newcomer; when one leaves, only its slots move."""
    members = [m for m in members if m.capacity in (0, BIG)] or [Member("solo:1:x", BIG)]
    rules = {job_id: JobPlacement(require=frozenset({tag})) for job_id, tag in requires.items()}
    before = assign(members, counts, placement=rules)
    newcomer = Member("zz:99:x", BIG, True, newcomer_jobs, newcomer_tags)
    after = assign([*members, newcomer], counts, previous=before, placement=rules)
    for job_id, count in counts.items():
        for index in range(count):
            old, new = before.owner(job_id, index), after.owner(job_id, index)
            if old is not None and new != old:
                assert new == newcomer.identity, (job_id, index)
    leaver = members[0].identity
    left = assign(members[1:], counts, previous=before, placement=rules)
    for identity, per_job in before.slots.items():
        if identity != leaver:
            for job_id, indexes in per_job.items():
                assert set(indexes) <= set(left.for_member(identity).get(job_id, ()))


@PROPERTY_SETTINGS
@given(
    capacities=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    preferred=st.lists(st.booleans(), min_size=5, max_size=5),
    count=st.integers(0, 20),
)
def test_preferred_processes_fill_first(
    capacities: list[int], preferred: list[bool], count: int
) -> None:
    members = [
        Member(f"m{n}", cap, tags=frozenset({"eu"}) if preferred[n] else frozenset())
        for n, cap in enumerate(capacities)
    ]
    rules = {"job": JobPlacement(prefer=frozenset({"eu"}))}
    result = assign(members, {"job": count}, placement=rules)
    check_valid(members, {"job": count}, rules, result)
    eu = [m for m in members if "eu" in m.tags]
    on_eu = sum(len(result.for_member(m.identity).get("job", ())) for m in eu)
    assert on_eu == min(count, sum(m.capacity for m in eu))


@PROPERTY_SETTINGS
@given(
    weights=st.lists(st.sampled_from([1, 2, 5, 10]), min_size=1, max_size=8),
    members=st.integers(1, 5),
)
def test_one_slot_jobs_spread_by_weight(weights: list[int], members: int) -> None:
    """Given one-slot jobs of several weights on equal processes, the weighted loads differ
    by at most the heaviest weight: heavy slots do not pile up on one process."""
    fleet = [Member(f"m{n}", BIG) for n in range(members)]
    counts = {f"job{n}": 1 for n in range(len(weights))}
    rules = {f"job{n}": JobPlacement(weight=Fraction(w)) for n, w in enumerate(weights)}
    result = assign(fleet, counts, placement=rules)
    load = {m.identity: 0 for m in fleet}
    for identity, per_job in result.slots.items():
        load[identity] += sum(weights[int(job[3:])] for job in per_job)
    assert max(load.values()) - min(load.values()) <= max(weights)


# -- examples -----------------------------------------------------------------------------------


def test_restricted_job_set_no_longer_strands_a_slot() -> None:
    """The old limit: job ``a`` spread over A and B left one slot of ``b`` unplaced while B
    idled; ``a`` now runs on B, where ``b`` cannot, and everything is placed."""
    members = [Member("A", 2), Member("B", 2, jobs=frozenset({"a"}))]
    result = assign(members, {"a": 2, "b": 2})
    assert result.slots == {"A": {"b": (0, 1)}, "B": {"a": (0, 1)}}
    assert result.unplaced == {}


def test_required_tag_runs_only_on_tagged_processes() -> None:
    members = [Member("cpu", 4), Member("gpu", 4, tags=frozenset({"gpu"}))]
    rules = {"train": JobPlacement(require=frozenset({"gpu"}))}
    result = assign(members, {"etl": 4, "train": 3}, placement=rules)
    assert result.for_member("gpu")["train"] == (0, 1, 2)
    assert "train" not in result.for_member("cpu")
    assert result.unplaced == {}


def test_chain_of_moves_frees_room_two_hops_away() -> None:
    """``c`` fits only on X; X is full of ``b``, which fits also on Y; Y is full of ``a``,
    which fits also on Z: one slot moves along each link."""
    members = [
        Member("X", 1, jobs=frozenset({"b", "c"})),
        Member("Y", 1, jobs=frozenset({"a", "b"})),
        Member("Z", 1, jobs=frozenset({"a"})),
    ]
    previous = {"X": {"b": [0]}, "Y": {"a": [0]}}
    result = assign(members, {"a": 1, "b": 1, "c": 1}, previous=previous)
    assert result.slots == {"X": {"c": (0,)}, "Y": {"b": (0,)}, "Z": {"a": (0,)}}


def test_shortage_goes_to_the_first_job_ids() -> None:
    members = [Member("A", 2)]
    result = assign(members, {"b": 2, "a": 2})
    assert result.slots == {"A": {"a": (0, 1)}}
    assert result.unplaced == {"b": (0, 1)}


def test_bad_weight_is_refused() -> None:
    with pytest.raises(ValueError, match="'job': weight"):
        assign([Member("a", 1)], {"job": 1}, placement={"job": JobPlacement(weight=Fraction(0))})


def test_preferred_process_joining_takes_the_preferring_job() -> None:
    members = [Member("a", 10), Member("b", 10)]
    rules = {"job": JobPlacement(prefer=frozenset({"eu"}))}
    before = assign(members, {"job": 4}, placement=rules)
    eu = Member("c", 10, tags=frozenset({"eu"}))
    after = assign([*members, eu], {"job": 4}, previous=before, placement=rules)
    assert after.slots == {"c": {"job": (0, 1, 2, 3)}}
    assert moves(before, after) == 4


# -- reasons -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "rule", "code", "message"),
    [
        ([Member("a", 2, jobs=frozenset({"other"}))], JobPlacement(), "no_process", "no live"),
        ([Member("a", 2, active=False)], JobPlacement(), "not_active", "quiet or stopping"),
        (
            [Member("a", 2)],
            JobPlacement(require=frozenset({"gpu"})),
            "no_tags",
            "no live process has tag gpu",
        ),
        (
            [Member("a", 2, active=False, tags=frozenset({"gpu"})), Member("b", 2)],
            JobPlacement(require=frozenset({"gpu"})),
            "no_tags",
            "no live, non-quiet process that runs this job has tag gpu",
        ),
        (
            [Member("a", 2, tags=frozenset({"gpu"}))],
            JobPlacement(require=frozenset({"gpu", "eu"})),
            "no_tags",
            "no live process has all of eu, gpu",
        ),
        (
            [Member("a", 2, tags=frozenset({"gpu"})), Member("b", 3)],
            JobPlacement(require=frozenset({"gpu"})),
            "no_capacity",
            "the only live process with tag gpu that can run it is full (2 slots",
        ),
    ],
)
def test_unplaced_reason_names_what_is_missing(
    members: list[Member], rule: JobPlacement, code: str, message: str
) -> None:
    reason = unplaced_reason("job", members, rule)
    assert reason.code == code
    assert message in reason.message


def test_placement_ignores_the_hash_seed(tmp_path: Path) -> None:
    """Processes run with different PYTHONHASHSEEDs: sets of tags and job ids iterate in
    different orders in each, and every one must still compute the same assignment."""
    script = tmp_path / "place.py"
    script.write_text(
        "import json, random\n"
        "from fractions import Fraction\n"
        "from process_balancer.balancing.assign import assign, Member, JobPlacement\n"
        "rng = random.Random(7)\n"
        "tags = ['gpu', 'ssd', 'eu-west', 'us', 'arm']\n"
        "jobs = [f'job-{n}' for n in range(12)]\n"
        "members = [Member(f'h{n}:{n}:x', rng.randint(1, 6), True,\n"
        "    frozenset(rng.sample(jobs, 8)), frozenset(rng.sample(tags, 2))) for n in range(40)]\n"
        "rules = {j: JobPlacement(frozenset(rng.sample(tags, rng.randint(0, 1))),\n"
        "    frozenset(rng.sample(tags, 2)), Fraction(rng.choice([1, 2, 5]))) for j in jobs}\n"
        "counts = {j: rng.randint(0, 25) for j in jobs}\n"
        "first = assign(members, counts, placement=rules)\n"
        "counts['job-3'] += 7\n"
        "second = assign(members[3:], counts, previous=first, placement=rules)\n"
        "print(json.dumps([first.to_json(), second.to_json()], sort_keys=True))\n"
    )
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, env=env, check=True
        )
        outputs.add(run.stdout)
    assert len(outputs) == 1
    assert json.loads(outputs.pop())[0]["slots"]
