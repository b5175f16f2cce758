"""Redis coordination backend: one Lua script per operation, each one atomic round trip."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..base import (
    PRUNE_BATCH,
    GroupSnapshot,
    HeartbeatResult,
    Inspection,
    Partition,
    Problem,
    RepairReport,
)
from ..codec import (
    RawGroup,
    RawMember,
    decode_group,
    dump_partitions,
    heartbeat_partitions,
)
from ..codec import dumps as _dumps
from ..codec import integer as _int
from ..codec import parse_slots as _parse_slots
from ..common import (
    decode_commands,
    hold_ms,
    ms,
    seconds,
    unplaced_slots,
)
from .client import KEY_TYPES
from .commands import RedisCommands
from .counts import RedisCounts
from .locks import RedisLocks
from .repair import plan_repair

#: Fields of the heartbeat script's reply read here.
_HEARTBEAT_FIELDS = 12


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=False))


class RedisBackend(RedisCounts, RedisLocks, RedisCommands):
    """Shared group state in Redis under ``<namespace>:`` keys: membership and the assignment
    here; worker counts and pauses in :mod:`.counts`, worker locks in :mod:`.locks`, remote
    commands and events in :mod:`.commands`, the connection and its keys in :mod:`.client`."""

    # -- membership --------------------------------------------------------------------------

    def heartbeat(
        self,
        identity: str,
        *,
        traits: Mapping[str, Any],
        info: Mapping[str, Any],
        expiry: float,
        seen_assignment_version: int,
        known_incarnation: str = "",
        known_version: int = 0,
        hold: float = 0.0,
    ) -> HeartbeatResult:
        keys = [
            self._members,
            self._traits,
            self._info,
            self._version,
            self._assignment_version,
            self._assignment,
            self._commands_key(identity),
            self._incarnation,
            self._departed,
            self._partitions,
        ]
        reply = self._run(
            "heartbeat",
            keys,
            [
                identity,
                _dumps(traits),
                _dumps(info),
                ms(expiry),
                str(seen_assignment_version),
                self.channel,
                PRUNE_BATCH,
                hold_ms(hold),
                known_incarnation,
                known_version,
            ],
        )
        # A value the script cannot read may also make its reply end early (Lua drops what
        # follows a nil): the reply is checked before any of it is used.
        if not isinstance(reply, list) or len(reply) < _HEARTBEAT_FIELDS:
            raise self._bad_reply("heartbeat", keys, reply)
        (
            joined,
            changed,
            version,
            av,
            slots_raw,
            commands_raw,
            next_expiry_ms,
            incarnation,
            now_ms,
            _grants_at,
            why,
            partitions_raw,
        ) = reply[:_HEARTBEAT_FIELDS]
        if (
            not isinstance(commands_raw, list)
            or not isinstance(next_expiry_ms, int)
            or not isinstance(now_ms, int)
        ):
            raise self._bad_reply("heartbeat", keys, reply)
        slots = partitions = None
        if slots_raw is not None:
            slots = _parse_slots(slots_raw, f"{self._assignment}[{identity}]")
            partitions = self._stored_partitions(partitions_raw)
        return HeartbeatResult(
            joined=bool(joined),
            changed=bool(changed),
            version=_int(version, self._version),
            assignment_version=_int(av, self._assignment_version),
            slots=slots,
            commands=decode_commands(commands_raw, identity),
            next_expiry=None if next_expiry_ms < 0 else seconds(next_expiry_ms),
            incarnation=str(incarnation),
            server_time=seconds(now_ms),
            new_incarnation=str(why or ""),
            partitions=partitions,
        )

    def _stored_partitions(self, raw: Any) -> dict[str, Partition] | None:
        """The partitions the heartbeat script read (``[type]`` for a key of another type);
        None, logged once, when they cannot be read (see ``codec.heartbeat_partitions``)."""
        if isinstance(raw, list):
            found = raw[0] if raw else "?"
            raw = f"a {found}"
        return heartbeat_partitions(raw, self._partitions)

    def reset_incarnation(self, expected: str, hold: float) -> str:
        current = self._run(
            "reset_incarnation",
            [self._incarnation, self._version],
            [expected, hold_ms(hold), self.channel],
        )
        return str(current)

    def leave(self, identity: str) -> None:
        self._run(
            "leave",
            [
                self._members,
                self._traits,
                self._info,
                self._version,
                self._commands_key(identity),
            ],
            [identity, self.channel],
        )

    def _read_group(self) -> RawGroup:
        (
            now_ms,
            wrong,
            version,
            av,
            members,
            traits_raw,
            info_raw,
            counts,
            assign,
            unpl,
            paused,
            partitions,
        ) = self._run(
            "snapshot",
            [
                self._members,
                self._traits,
                self._info,
                self._version,
                self._assignment_version,
                self._assignment,
                self._counts,
                self._unplaced,
                self._paused,
                self._partitions,
            ],
            [],
        )
        traits = _pairs(traits_raw)
        infos = _pairs(info_raw)
        raw = RawGroup(
            now=seconds(now_ms),
            version=(self._version, version),
            assignment_version=(self._assignment_version, av),
            unplaced=(self._unplaced, unpl),
            partitions=(self._partitions, partitions),
        )
        for entry in wrong:
            key, _, found = entry.rpartition(" ")
            part = self._kind(key)
            detail = f"is a {found}, expected a {KEY_TYPES[part]}"
            raw.problems.append(Problem(key, detail, self._fix(part), part, raw=found))
        for identity, deadline in _pairs(members).items():
            raw.members.append(
                RawMember(
                    identity=identity,
                    deadline=seconds(float(deadline)),
                    traits=traits.get(identity, "{}"),
                    info=infos.get(identity, "{}"),
                    where=f"{self._members}[{identity}]",
                    where_traits=f"{self._traits}[{identity}]",
                    where_info=f"{self._info}[{identity}]",
                )
            )
        raw.counts = [
            (job, value, f"{self._counts}[{job}]") for job, value in _pairs(counts).items()
        ]
        raw.paused = [
            (job, value, f"{self._paused}[{job}]") for job, value in _pairs(paused).items()
        ]
        raw.assignment = [
            (identity, value, f"{self._assignment}[{identity}]")
            for identity, value in _pairs(assign).items()
        ]
        return raw

    def snapshot(self) -> GroupSnapshot:
        return decode_group(self._read_group(), lenient=False).snapshot

    def inspect(self) -> Inspection:
        decoded = decode_group(self._read_group(), lenient=True)
        return Inspection(decoded.snapshot, decoded.paused, decoded.problems)

    def repair(self, *, apply: bool) -> RepairReport:
        raw = self._read_group()
        decoded = decode_group(raw, lenient=True)
        extra = self._stray_keys()
        holders = self._lock_holders() if apply else {}
        plan = plan_repair(self.fixed_keys(), self.key, decoded, extra, holders)
        if not apply:
            return RepairReport(plan.actions, decoded.snapshot.counts, decoded.paused, False)
        version, _ = self._run("repair", plan.keys, [self.channel, len(plan.ops), *plan.args()])
        actions = [
            *plan.actions[:-1],
            f"{self._version}: set to {version}, past every earlier version, and "
            f"{self._assignment_version} cleared, so every process recomputes",
        ]
        return RepairReport(actions, decoded.snapshot.counts, decoded.paused, True)

    def fixed_keys(self) -> list[str]:
        """The keys ``repair`` rewrites, in the order repair.lua takes them."""
        return [
            self._members,
            self._traits,
            self._info,
            self._version,
            self._assignment_version,
            self._assignment,
            self._unplaced,
            self._counts,
            self._paused,
        ]

    def _stray_keys(self) -> list[Problem]:
        """Command queues and acknowledgements of another type than they must have."""
        found = []
        with self._errors():
            for kind in ("commands", "acks"):
                for key in self.client.scan_iter(match=f"{self._prefix}{kind}:*", count=1000):
                    found.append(str(key))
        return self.diagnose(found)

    def write_assignment(
        self,
        version: int,
        slots: Mapping[str, Mapping[str, tuple[int, ...]]],
        unplaced: Mapping[str, tuple[int, ...]],
        partitions: Mapping[str, Partition] | None = None,
    ) -> bool:
        args: list[Any] = [
            str(version),
            self.channel,
            _dumps({k: list(v) for k, v in unplaced.items()}),
            dump_partitions(partitions),
        ]
        for identity in sorted(slots):
            args.append(identity)
            args.append(_dumps({job: list(idx) for job, idx in slots[identity].items()}))
        written = self._run(
            "write_assignment",
            [
                self._version,
                self._assignment_version,
                self._assignment,
                self._unplaced,
                self._partitions,
            ],
            args,
        )
        return self._status(written)

    def unplaced(self) -> dict[str, list[int]]:
        with self._errors(self._unplaced):
            raw = self.client.get(self._unplaced)
        return unplaced_slots(str(raw or "{}"), self._unplaced)
