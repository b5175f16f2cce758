"""Backend work per heartbeat as the group grows: P = 10 ... 10,000 processes on one Redis.

Virtual members are driven from this one process through the real heartbeat code
(``RedisBackend.heartbeat``). For each P, after every member has joined and the assignment
is stored, it measures steady-state heartbeats (membership unchanged) and prints, per
heartbeat: Redis commands (from INFO commandstats, which counts the commands a script runs),
round trips, and Redis CPU seconds per 1,000 heartbeats. Beside it, in the same run, the
original's scheme: every process keeps its key alive and walks the whole process list to
prune dead entries, which costs O(P) commands per heartbeat. A membership change (one process
joining) is measured too: it costs one O(P) rebalance, once.

    python bench/heartbeat_scale.py [--sizes 10,100,1000,10000] [--beats 2000]
"""

from __future__ import annotations

import argparse
import json
import random
import time
import uuid
from collections.abc import Callable

import redis

from process_balancer.backends.redis.backend import RedisBackend
from process_balancer.balancing.rebalance import rebalance

TRAITS = {
    "capacity": 10,
    "active": True,
    "quiet": False,
    "stopping": False,
    "jobs": ["sync"],
    "defaults": {"sync": 8},
    "hostname": "bench",
    "pid": 1,
    "started_at": 0.0,
}


def commandstats(client: redis.Redis) -> tuple[int, int, float]:
    """(commands run, script calls, Redis CPU seconds) so far."""
    stats = client.info("commandstats")
    total = sum(v["calls"] for v in stats.values())
    scripts = sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    cpu = client.info("cpu")
    return total, scripts, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def measure(client: redis.Redis, beats: int, beat: Callable[[int], int]) -> dict[str, float]:
    """Run ``beats`` heartbeats; ``beat(i)`` returns the round trips it made."""
    before = commandstats(client)
    trips = 0
    started = time.perf_counter()
    for i in range(beats):
        trips += beat(i)
    elapsed = time.perf_counter() - started
    after = commandstats(client)
    # INFO itself is one command per call of commandstats(): two on each side.
    commands = after[0] - before[0] - 2
    return {
        "commands": commands / beats,
        "round_trips": trips / beats,
        "cpu_per_1000": (after[2] - before[2]) * 1000 / beats,
        "wall_ms": elapsed * 1000 / beats,
    }


def run_size(url: str, size: int, beats: int) -> dict[str, dict[str, float]]:
    namespace = f"bench-hb-{uuid.uuid4().hex[:8]}"
    backend = RedisBackend(url, namespace)
    client = backend.client
    identities = [f"host{i // 50}:{1000 + i}:{i:06x}" for i in range(size)]
    try:
        for identity in identities:
            backend.heartbeat(
                identity,
                traits={**TRAITS, "started_at": float(len(identity))},
                info={},
                expiry=600,
                seen_assignment_version=-1,
            )
        started = time.perf_counter()
        rebalance(backend)
        first_rebalance = time.perf_counter() - started
        seen = backend.snapshot().assignment_version
        traits = {
            identity: {**TRAITS, "started_at": float(len(identity))} for identity in identities
        }
        info = {"heartbeat_at": 0.0, "running": {"sync": [0]}, "slots": {}}

        def ours(i: int) -> int:
            identity = identities[random.randrange(size)]
            backend.heartbeat(
                identity,
                traits=traits[identity],
                info=info,
                expiry=600,
                seen_assignment_version=seen,
            )
            return 1

        proc_list = f"{namespace}:orig:processes"
        pipe = client.pipeline(transaction=False)
        for identity in identities:
            pipe.rpush(proc_list, identity)
            pipe.set(f"{namespace}:orig:proc:{identity}", "{}", ex=600)
        pipe.execute()

        def original(i: int) -> int:
            # The original's heartbeat: refresh its own key, read the whole process list and
            # check every entry's key to prune the expired ones.
            identity = identities[random.randrange(size)]
            client.set(f"{namespace}:orig:proc:{identity}", json.dumps(info), ex=60)
            members = client.lrange(proc_list, 0, -1)
            check = client.pipeline(transaction=False)
            for member in members:
                check.exists(f"{namespace}:orig:proc:{member}")
            check.execute()
            return 3

        ours_result = measure(client, beats, ours)
        original_beats = max(20, min(beats, 200_000 // max(size, 1)))
        original_result = measure(client, original_beats, original)

        # One membership change: a newcomer joins; its heartbeat plus one rebalance.
        before = commandstats(client)
        started = time.perf_counter()
        backend.heartbeat(
            "newcomer:1:abcdef", traits=TRAITS, info={}, expiry=600, seen_assignment_version=-1
        )
        rebalance(backend)
        change_ms = (time.perf_counter() - started) * 1000
        after = commandstats(client)
        change = {
            "commands": after[0] - before[0] - 2,
            "ms": change_ms,
            "first_rebalance_ms": first_rebalance * 1000,
        }
        return {"ours": ours_result, "original": original_result, "change": change}
    finally:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=5000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--beats", type=int, default=2000)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    print(f"heartbeats measured: {args.beats} per size (membership unchanged)\n")
    header = (
        f"{'P':>6} | {'cmds/beat':>9} {'trips':>5} {'cpu s/1k':>8} {'ms/beat':>7} | "
        f"{'orig cmds':>9} {'trips':>5} {'cpu s/1k':>8} {'ms/beat':>7} | "
        f"{'cmds ratio':>10} | {'join: cmds':>10} {'ms':>7}"
    )
    print(header)
    print("-" * len(header))
    for size in sizes:
        r = run_size(args.redis_url, size, args.beats)
        o, b, c = r["ours"], r["original"], r["change"]
        ratio = b["commands"] / o["commands"] if o["commands"] else float("inf")
        print(
            f"{size:>6} | {o['commands']:>9.1f} {o['round_trips']:>5.1f} "
            f"{o['cpu_per_1000']:>8.3f} {o['wall_ms']:>7.3f} | "
            f"{b['commands']:>9.1f} {b['round_trips']:>5.1f} {b['cpu_per_1000']:>8.3f} "
            f"{b['wall_ms']:>7.3f} | {ratio:>9.1f}x | {c['commands']:>10.0f} {c['ms']:>7.1f}"
        )
    print(
        "\ncmds/beat: Redis commands per heartbeat, scripts' inner commands included; "
        "trips: round trips; cpu s/1k: Redis CPU seconds per 1,000 heartbeats; "
        "orig: the original's list-walking heartbeat run beside it; join: commands and time "
        "for one newcomer's heartbeat plus the one rebalance it triggers."
    )


if __name__ == "__main__":
    main()
