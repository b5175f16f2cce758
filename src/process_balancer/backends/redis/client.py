"""The connection to Redis behind every Redis backend operation: the group's keys, the Lua
scripts that change them, and what a failure means.

A Redis error says what went wrong but not which key caused it (a WRONGTYPE names none), so
a failure is explained by checking the keys the operation touched: a key of another type, or
an integer key that holds something else, is a CorruptStateError naming that key and its
fix; anything else is a BackendError.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from importlib import resources
from typing import Any

import redis

from ..base import REPAIR_HINT, Backend, BackendError, CorruptStateError, Problem
from ..codec import corrupt, shown
from ..codec import version_value as _version_value

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
    "partitions": "string",
    "counts": "hash",
    "paused": "hash",
    "commands": "list",
    "acks": "hash",
    "lock": "string",
    "fence": "string",
    "gate": "hash",
    "incarnation": "hash",
    "departed": "zset",
}
#: Keys that hold an integer the scripts increment or compare.
_INTEGER_KEYS = ("version", "assignment_version", "fence")


def _load_script(name: str) -> str:
    return (resources.files(__package__) / "lua" / f"{name}.lua").read_text()


class RedisClient(Backend):
    """The connection, key names and scripts of one group in Redis under ``<namespace>:``;
    the operations are in the classes built on it (:class:`~.backend.RedisBackend`)."""

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
        self._partitions = f"{prefix}partitions"
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
        if kind == "gate":
            return (
                "nothing to do: the next lock of the job replaces an unreadable gate and "
                "grants nothing under it until every holder under the old one has stopped"
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

    def _bad_reply(self, script: str, keys: list[str], reply: Any) -> CorruptStateError:
        problems = self.diagnose(keys)
        if problems:
            return corrupt(problems)
        return CorruptStateError(
            f"the {script} script answered {shown(reply)}, which is not what it returns for "
            f"readable data in {', '.join(keys)}; {REPAIR_HINT}"
        )

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
