"""Redis coordination backend: one Lua script per operation, each one atomic round trip."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from typing import Any

import redis

from ..defaults import MAX_WORKERS
from .base import (
    ACK_TTL_MS,
    COMMAND_TTL_MS,
    PRUNE_BATCH,
    Acquired,
    Backend,
    BackendError,
    CorruptStateError,
    GroupSnapshot,
    HeartbeatResult,
    MemberState,
)
from .codec import dumps as _dumps
from .codec import integer as _int
from .codec import loads_dict as _loads_dict
from .codec import parse_slots as _parse_slots
from .counts import argument, outcome

logger = logging.getLogger(__name__)


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
)


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
        self._prefix = prefix

    def key(self, *parts: str) -> str:
        """A key inside this backend's namespace."""
        return self._prefix + ":".join(parts)

    def _commands_key(self, identity: str) -> str:
        return self.key("commands", identity)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            raise BackendError(f"Redis at {self.display_url}: {exc}") from exc

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return self._scripts[name](keys=keys, args=args)
        except redis.RedisError as exc:
            raise BackendError(f"Redis at {self.display_url}: {exc}") from exc

    # -- membership --------------------------------------------------------------------------

    def heartbeat(
        self,
        identity: str,
        *,
        traits: Mapping[str, Any],
        info: Mapping[str, Any],
        expiry: float,
        seen_assignment_version: int,
    ) -> HeartbeatResult:
        joined, changed, version, av, slots_raw, commands_raw, next_expiry_ms = self._run(
            "heartbeat",
            [
                self._members,
                self._traits,
                self._info,
                self._version,
                self._assignment_version,
                self._assignment,
                self._commands_key(identity),
            ],
            [
                identity,
                _dumps(traits),
                _dumps(info),
                int(expiry * 1000),
                str(seen_assignment_version),
                self.channel,
                PRUNE_BATCH,
            ],
        )
        slots = None
        if slots_raw is not None:
            slots = _parse_slots(slots_raw, f"{self._assignment}[{identity}]")
        commands = []
        for raw in commands_raw:
            try:
                command = json.loads(raw)
                if not isinstance(command, dict):
                    raise ValueError("not an object")
            except ValueError:
                logger.warning("ignoring unreadable remote command %r for %s", raw, identity)
                continue
            commands.append(command)
        return HeartbeatResult(
            joined=bool(joined),
            changed=bool(changed),
            version=int(version),
            assignment_version=_int(av, self._assignment_version),
            slots=slots,
            commands=commands,
            next_expiry=None if int(next_expiry_ms) < 0 else int(next_expiry_ms) / 1000.0,
        )

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

    def snapshot(self) -> GroupSnapshot:
        now_ms, version, av, members_raw, traits_raw, info_raw, counts_raw, assign_raw, unpl = (
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
                ],
                [],
            )
        )
        traits = _pairs(traits_raw)
        infos = _pairs(info_raw)
        members = []
        for identity, deadline in _pairs(members_raw).items():
            members.append(
                MemberState(
                    identity=identity,
                    deadline=float(deadline) / 1000.0,
                    traits=_loads_dict(traits.get(identity, "{}"), f"{self._traits}[{identity}]"),
                    info=_loads_dict(infos.get(identity, "{}"), f"{self._info}[{identity}]"),
                )
            )
        counts = {}
        for job_id, raw in _pairs(counts_raw).items():
            try:
                counts[job_id] = int(raw)
            except ValueError:
                logger.error(
                    "worker count of job %r in %s is %r, not an integer; the job's config count "
                    "is used until it is set again (process-balancer scale or "
                    "adjust_scheduled_workers)",
                    job_id,
                    self._counts,
                    raw,
                )
        assignment = {
            identity: {job: list(idx) for job, idx in _parse_slots(raw, identity).items()}
            for identity, raw in _pairs(assign_raw).items()
        }
        unplaced = {job: list(idx) for job, idx in _parse_slots(unpl, self._unplaced).items()}
        return GroupSnapshot(
            version=_int(version, self._version),
            assignment_version=_int(av, self._assignment_version),
            members=members,
            counts=counts,
            assignment=assignment,
            unplaced=unplaced,
            now=float(now_ms) / 1000.0,
        )

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
        return bool(written)

    # -- worker counts -----------------------------------------------------------------------

    def get_count(self, job_id: str) -> int | None:
        try:
            raw = self.client.hget(self._counts, job_id)
        except redis.RedisError as exc:
            raise BackendError(f"Redis at {self.display_url}: {exc}") from exc
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            raise CorruptStateError(
                f"the worker count of job {job_id!r} stored in {self._counts} is {raw!r}, not "
                f"an integer; set it again with adjust_scheduled_workers({job_id!r}, to=N)"
            ) from None

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
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hdel(self._counts, job_id)
                pipe.hdel(self._paused, job_id)
                pipe.incr(self._version)
                pipe.publish(self.channel, "state")
                pipe.execute()
        except redis.RedisError as exc:
            raise BackendError(f"Redis at {self.display_url}: {exc}") from exc

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
        with self._errors():
            raw = self.client.hgetall(self._paused)
        counts: dict[str, int] = {}
        for job_id, value in raw.items():
            try:
                counts[str(job_id)] = int(value)
            except ValueError:
                logger.error(
                    "the count to resume job %r with, stored in %s, is %r, not a count; "
                    "resume refuses it until the count is set with process-balancer scale",
                    job_id,
                    self._paused,
                    value,
                )
        return counts

    def unplaced(self) -> dict[str, list[int]]:
        with self._errors():
            raw = self.client.get(self._unplaced)
        parsed = _parse_slots(str(raw or "{}"), self._unplaced)
        return {job: list(indexes) for job, indexes in parsed.items()}

    # -- remote commands ---------------------------------------------------------------------

    def send_command(self, identity: str, command: Mapping[str, Any]) -> bool:
        queued = self._run(
            "send_command",
            [self._members, self._commands_key(identity)],
            [identity, _dumps(command), COMMAND_TTL_MS],
        )
        if queued:
            # Wake the member now; it also finds the command at its next heartbeat.
            with contextlib.suppress(redis.RedisError):
                self.client.publish(self.channel, f"command {identity}")
        return bool(queued)

    def ack_command(self, identity: str, command_id: str, at: float) -> None:
        key = self.key("acks", command_id)
        with self._errors(), self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, identity, repr(at))
            pipe.pexpire(key, ACK_TTL_MS)
            pipe.execute()

    def command_acks(self, command_id: str) -> dict[str, float]:
        with self._errors():
            raw = self.client.hgetall(self.key("acks", command_id))
        acks: dict[str, float] = {}
        for identity, at in raw.items():
            try:
                acks[str(identity)] = float(at)
            except ValueError:
                acks[str(identity)] = 0.0
        return acks

    # -- worker locks ------------------------------------------------------------------------

    def lock_acquire(self, name: str, holder: str, ttl: float) -> Acquired | None:
        token = secrets.token_hex(12)
        result = self._run(
            "lock_acquire",
            [self.key("lock", name), self.key("fence", name), self._members],
            [token, holder, max(1, int(ttl * 1000))],
        )
        status = int(result[0])
        if status == -1:
            raise CorruptStateError(
                f"worker lock {self.key('lock', name)} holds {result[1]!r}, which is not a "
                "process-balancer lock; delete that key if nothing else uses it"
            )
        if status == 0:
            return None
        if status == 2:
            logger.warning(
                "worker lock %s taken over from %s, whose membership has expired",
                name,
                result[2],
            )
        return Acquired(token=token, fence=int(result[1]))

    def lock_renew(self, name: str, token: str, ttl: float) -> bool:
        renewed = self._run(
            "lock_renew", [self.key("lock", name)], [token, max(1, int(ttl * 1000))]
        )
        return bool(renewed)

    def lock_release(self, name: str, token: str) -> bool:
        released = self._run("lock_release", [self.key("lock", name)], [token, self.channel, name])
        return bool(released)

    # -- notifications -----------------------------------------------------------------------

    def listen(self, on_event: Callable[[str], None], stop: threading.Event) -> None:
        delay = 0.1
        while not stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self.channel)
                on_event("subscribed")
                delay = 0.1
                while not stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None and message.get("type") == "message":
                        on_event(str(message["data"]))
            except redis.RedisError as exc:
                logger.warning(
                    "event subscription to Redis at %s failed (%s); retrying in %.1fs",
                    self.display_url,
                    exc,
                    delay,
                )
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(redis.RedisError):
                    pubsub.close()

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
