"""Redis coordination backend: one Lua script per operation, each one atomic round trip."""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from typing import Any

import redis

from ...config.defaults import MAX_WORKERS
from ..base import (
    ACK_TTL_MS,
    COMMAND_TTL_MS,
    PRUNE_BATCH,
    REPAIR_HINT,
    Acquired,
    Backend,
    BackendError,
    CorruptStateError,
    GroupSnapshot,
    HeartbeatResult,
    Inspection,
    Problem,
    RepairReport,
)
from ..codec import RawGroup, RawMember, corrupt, decode_group, shown
from ..codec import dumps as _dumps
from ..codec import integer as _int
from ..codec import parse_slots as _parse_slots
from ..codec import report_once as _report_once
from ..codec import version_value as _version_value
from ..common import (
    decode_commands,
    hold_ms,
    listen_with_retry,
    lock_ttl_ms,
    log_takeover,
    ms,
    readable_pauses,
    runtime_count,
    seconds,
    unplaced_slots,
)
from ..counts import argument, outcome
from .repair import plan_repair

_SCRIPTS = (
    "heartbeat",
    "snapshot",
    "write_assignment",
    "set_count",
    "lock_acquire",
    "lock_renew",
    "lock_release",
    "leave",
    "send_command",
    "pause",
    "resume",
    "reset_incarnation",
    "repair",
)

#: The type each key of a group must have; a key that has another one was written by
#: something else (a WRONGTYPE error names no key, so the keys are checked when one happens).
KEY_TYPES = {
    "members": "zset",
    "traits": "hash",
    "info": "hash",
    "version": "string",
    "assignment_version": "string",
    "assignment": "hash",
    "unplaced": "string",
    "counts": "hash",
    "paused": "hash",
    "commands": "list",
    "acks": "hash",
    "lock": "string",
    "fence": "string",
    "incarnation": "hash",
    "departed": "zset",
}
#: Keys that hold an integer the scripts increment or compare.
_INTEGER_KEYS = ("version", "assignment_version", "fence")
#: Fields of the heartbeat script's reply read here.
_HEARTBEAT_FIELDS = 11


def _load_script(name: str) -> str:
    return (resources.files(__package__) / "lua" / f"{name}.lua").read_text()


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=False))


class RedisBackend(Backend):
    """Shared group state in Redis under ``<namespace>:`` keys."""

    def __init__(self, url: str, namespace: str, *, socket_timeout: float = 5.0) -> None:
        self.url = url
        self.namespace = namespace
        self.client: redis.Redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            health_check_interval=30,
        )
        self._scripts = {name: self.client.register_script(_load_script(name)) for name in _SCRIPTS}
        prefix = f"{namespace}:"
        self.channel = f"{prefix}events"
        self._members = f"{prefix}members"
        self._traits = f"{prefix}traits"
        self._info = f"{prefix}info"
        self._version = f"{prefix}version"
        self._assignment_version = f"{prefix}assignment_version"
        self._assignment = f"{prefix}assignment"
        self._unplaced = f"{prefix}unplaced"
        self._counts = f"{prefix}counts"
        self._paused = f"{prefix}paused"
        self._incarnation = f"{prefix}incarnation"
        self._departed = f"{prefix}departed"
        self._prefix = prefix

    def key(self, *parts: str) -> str:
        """A key inside this backend's namespace."""
        return self._prefix + ":".join(parts)

    def _commands_key(self, identity: str) -> str:
        return self.key("commands", identity)

    @contextlib.contextmanager
    def _errors(self, *keys: str) -> Iterator[None]:
        """Redis failures as BackendError; an error caused by what ``keys`` hold (a wrong
        type, a version that is not an integer) as CorruptStateError naming them."""
        try:
            yield
        except redis.ResponseError as exc:
            raise self._explain(exc, keys) from exc
        except redis.RedisError as exc:
            raise BackendError(f"Redis at {self.display_url}: {exc}") from exc

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        with self._errors(*keys):
            return self._scripts[name](keys=keys, args=args)

    def _kind(self, key: str) -> str:
        """``members``, ``commands``, ``lock``...: what a key of this group is for."""
        return key[len(self._prefix) :].split(":", 1)[0]

    def _fix(self, kind: str) -> str:
        if kind in ("lock", "fence"):
            return (
                "nothing to do: the runner lets an unreadable worker lock expire within the "
                "job's runtime_lock_timeout + takeover_grace and replaces an unreadable "
                "fencing counter"
            )
        if kind in ("counts", "paused"):
            return (
                "`process-balancer repair --yes` removes it; then set the counts again with "
                "`process-balancer scale`"
            )
        return REPAIR_HINT

    def diagnose(self, keys: tuple[str, ...] | list[str]) -> list[Problem]:
        """What is wrong with ``keys``: a type other than the one each must have, or an
        integer key (version, fencing counter) that holds something else."""
        keys = [k for k in dict.fromkeys(keys) if self._kind(k) in KEY_TYPES]
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.type(key)
                    pipe.get(key) if self._kind(key) in _INTEGER_KEYS else pipe.exists(key)
                found = pipe.execute(raise_on_error=False)
        except redis.RedisError:
            return []
        problems = []
        for key, kind, value in zip(keys, found[::2], found[1::2], strict=True):
            part = self._kind(key)
            expected = KEY_TYPES[part]
            if isinstance(kind, str) and kind not in ("none", expected):
                problems.append(
                    Problem(key, f"is a {kind}, expected a {expected}", self._fix(part), part)
                )
            elif part in _INTEGER_KEYS and isinstance(value, str) and _version_value(value) is None:
                problems.append(
                    Problem(
                        key, f"holds {shown(value)}, expected an integer", self._fix(part), part
                    )
                )
        return problems

    def _explain(self, exc: redis.ResponseError, keys: tuple[str, ...]) -> BackendError:
        problems = self.diagnose(keys)
        if problems:
            return corrupt(problems)
        return BackendError(f"Redis at {self.display_url}: {exc}")

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
        ) = reply[:_HEARTBEAT_FIELDS]
        if (
            not isinstance(commands_raw, list)
            or not isinstance(next_expiry_ms, int)
            or not isinstance(now_ms, int)
        ):
            raise self._bad_reply("heartbeat", keys, reply)
        slots = None
        if slots_raw is not None:
            slots = _parse_slots(slots_raw, f"{self._assignment}[{identity}]")
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
        )

    def _bad_reply(self, script: str, keys: list[str], reply: Any) -> CorruptStateError:
        problems = self.diagnose(keys)
        if problems:
            return corrupt(problems)
        return CorruptStateError(
            f"the {script} script answered {shown(reply)}, which is not what it returns for "
            f"readable data in {', '.join(keys)}; {REPAIR_HINT}"
        )

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
        now_ms, wrong, version, av, members, traits_raw, info_raw, counts, assign, unpl, paused = (
            self._run(
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
                ],
                [],
            )
        )
        traits = _pairs(traits_raw)
        infos = _pairs(info_raw)
        raw = RawGroup(
            now=seconds(now_ms),
            version=(self._version, version),
            assignment_version=(self._assignment_version, av),
            unplaced=(self._unplaced, unpl),
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

    def _lock_holders(self) -> dict[str, int]:
        """identity -> ms its worker locks still live, for every holder of a lock now."""
        holders: dict[str, int] = {}
        with self._errors():
            keys = [
                str(k) for k in self.client.scan_iter(match=f"{self._prefix}lock:*", count=1000)
            ]
            with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.get(key)
                    pipe.pttl(key)
                found = pipe.execute(raise_on_error=False)
        for value, ttl in zip(found[::2], found[1::2], strict=True):
            if isinstance(value, str) and isinstance(ttl, int) and ttl > 0:
                # token fence incarnation holder (token fence holder from earlier versions)
                parts = value.split(" ")
                if len(parts) in (3, 4) and parts[1].isdigit():
                    holders[parts[-1]] = max(holders.get(parts[-1], 0), ttl)
        return holders

    def write_assignment(
        self,
        version: int,
        slots: Mapping[str, Mapping[str, tuple[int, ...]]],
        unplaced: Mapping[str, tuple[int, ...]],
    ) -> bool:
        args: list[Any] = [
            str(version),
            self.channel,
            _dumps({k: list(v) for k, v in unplaced.items()}),
        ]
        for identity in sorted(slots):
            args.append(identity)
            args.append(_dumps({job: list(idx) for job, idx in slots[identity].items()}))
        written = self._run(
            "write_assignment",
            [self._version, self._assignment_version, self._assignment, self._unplaced],
            args,
        )
        return self._status(written)

    # -- worker counts -----------------------------------------------------------------------

    def get_count(self, job_id: str) -> int | None:
        with self._errors(self._counts):
            raw = self.client.hget(self._counts, job_id)
        return runtime_count(raw, f"{self._counts}[{job_id}]")

    def set_count(
        self,
        job_id: str,
        *,
        to: int | None,
        by: int | None,
        default: int,
        maximum: int = MAX_WORKERS,
    ) -> int:
        mode, value = ("to", to) if to is not None else ("by", by)
        status, result, limit = self._run(
            "set_count",
            [self._counts, self._version, self._paused],
            [job_id, mode, argument(value), argument(default), self.channel, argument(maximum)],
        )
        count = outcome("set", job_id, status, result, limit, to=to, by=by, where=self._counts)
        assert count is not None
        return count

    def clear_count(self, job_id: str) -> None:
        with (
            self._errors(self._counts, self._paused, self._version),
            self.client.pipeline(transaction=True) as pipe,
        ):
            pipe.hdel(self._counts, job_id)
            pipe.hdel(self._paused, job_id)
            pipe.incr(self._version)
            pipe.publish(self.channel, "state")
            pipe.execute()

    def pause(self, job_id: str, *, default: int, maximum: int = MAX_WORKERS) -> int | None:
        status, value, limit = self._run(
            "pause",
            [self._counts, self._paused, self._version],
            [job_id, argument(default), self.channel, argument(maximum)],
        )
        return outcome("pause", job_id, status, value, limit, where=self._counts)

    def resume(self, job_id: str, *, maximum: int = MAX_WORKERS) -> int | None:
        status, value, limit = self._run(
            "resume",
            [self._counts, self._paused, self._version],
            [job_id, self.channel, argument(maximum)],
        )
        return outcome("resume", job_id, status, value, limit, where=self._paused)

    def paused_counts(self) -> dict[str, int]:
        with self._errors(self._paused):
            raw = self.client.hgetall(self._paused)
        return readable_pauses(
            (job_id, value, f"{self._paused}[{job_id!s}]") for job_id, value in raw.items()
        )

    def unplaced(self) -> dict[str, list[int]]:
        with self._errors(self._unplaced):
            raw = self.client.get(self._unplaced)
        return unplaced_slots(str(raw or "{}"), self._unplaced)

    # -- remote commands ---------------------------------------------------------------------

    def send_command(self, identity: str, command: Mapping[str, Any]) -> bool:
        queued = self._status(
            self._run(
                "send_command",
                [self._members, self._commands_key(identity)],
                [identity, _dumps(command), COMMAND_TTL_MS],
            )
        )
        if queued:
            # Wake the member now; it also finds the command at its next heartbeat.
            with contextlib.suppress(redis.RedisError):
                self.client.publish(self.channel, f"command {identity}")
        return queued

    def _status(self, reply: Any) -> bool:
        """A script's 1 or 0; its ``{-1, "<key> <type>"...}`` (a key of the wrong type, nothing
        written) as CorruptStateError naming those keys."""
        if isinstance(reply, int):
            return bool(reply)
        problems = []
        for entry in reply[1:] if isinstance(reply, list) else []:
            key, _, found = str(entry).rpartition(" ")
            part = self._kind(key)
            expected = KEY_TYPES.get(part, "?")
            problems.append(
                Problem(key, f"is a {found}, expected a {expected}", self._fix(part), part)
            )
        if not problems:
            raise CorruptStateError(f"a script answered {shown(reply)}; {REPAIR_HINT}")
        raise corrupt(problems)

    def ack_command(self, identity: str, command_id: str, at: float) -> None:
        key = self.key("acks", command_id)
        with self._errors(key), self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, identity, repr(at))
            pipe.pexpire(key, ACK_TTL_MS)
            pipe.execute()

    def command_acks(self, command_id: str) -> dict[str, float]:
        key = self.key("acks", command_id)
        with self._errors(key):
            raw = self.client.hgetall(key)
        acks: dict[str, float] = {}
        for identity, at in raw.items():
            try:
                acks[str(identity)] = float(at)
            except ValueError:
                acks[str(identity)] = 0.0  # acknowledged; only the time is unreadable
        return acks

    # -- worker locks ------------------------------------------------------------------------

    def lock_acquire(
        self, name: str, holder: str, ttl: float, *, grace: float = 0.0
    ) -> Acquired | None:
        token = secrets.token_hex(12)
        result = self._run(
            "lock_acquire",
            [
                self.key("lock", name),
                self.key("fence", name),
                self._members,
                self._incarnation,
                self._departed,
            ],
            [token, holder, lock_ttl_ms(ttl + grace), hold_ms(grace)],
        )
        status = int(result[0])
        if status == 5:
            _report_once(
                f"{result[1]} holds {shown(result[2])}, which is not a process-balancer lock; "
                "the slot is free when that key expires, within the lock's ttl and "
                "takeover_grace (its holder, if any, cannot renew it and stops by then)"
            )
            return None
        if status in (0, 3, 4):
            return None
        if status == 2:
            log_takeover(name, result[2])
        return Acquired(token=token, fence=int(result[1]))

    def lock_renew(self, name: str, token: str, ttl: float, *, grace: float = 0.0) -> bool:
        renewed = self._run(
            "lock_renew",
            [self.key("lock", name), self._incarnation],
            [token, lock_ttl_ms(ttl + grace)],
        )
        return bool(renewed)

    def lock_release(self, name: str, token: str) -> bool:
        released = self._run("lock_release", [self.key("lock", name)], [token, self.channel, name])
        return bool(released)

    # -- notifications -----------------------------------------------------------------------

    def listen(self, on_event: Callable[[str], None], stop: threading.Event) -> None:
        def listen_once(subscribed: Callable[[], None]) -> None:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self.channel)
                subscribed()
                while not stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None and message.get("type") == "message":
                        on_event(str(message["data"]))
            finally:
                with contextlib.suppress(redis.RedisError):
                    pubsub.close()

        listen_with_retry(
            listen_once,
            on_event,
            stop,
            failures=(redis.RedisError,),
            what=f"event subscription to Redis at {self.display_url}",
        )

    def ping(self) -> float:
        """Round-trip time to Redis in seconds."""
        started = time.perf_counter()
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise BackendError(f"Redis at {self.display_url}: {exc}") from exc
        return time.perf_counter() - started

    def close(self) -> None:
        self.client.close()
