"""Remote commands and events in Redis: a list ``commands:<identity>`` per member (read and
emptied by its heartbeat), a hash ``acks:<command id>`` with a TTL, and the group's pub/sub
channel, which wakes members at once."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import redis

from ..base import ACK_TTL_MS, COMMAND_TTL_MS, StopSignal
from ..codec import dumps as _dumps
from ..common import listen_with_retry
from .client import RedisClient


class RedisCommands(RedisClient):
    """The remote-command and notification operations of :class:`~.backend.RedisBackend`."""

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

    def listen(self, on_event: Callable[[str], None], stop: StopSignal) -> None:
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
