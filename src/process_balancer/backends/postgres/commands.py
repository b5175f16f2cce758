"""Remote commands and events in PostgreSQL: rows of ``pb_commands`` (read and removed by
the member's heartbeat) and ``pb_acks``, and ``pg_notify`` on the group's channel, which
wakes members at once; the listener holds a connection of its own for ``LISTEN``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import psycopg

from ..base import ACK_TTL_MS, COMMAND_TTL_MS, BackendError, StopSignal
from ..codec import dumps as _dumps
from ..common import listen_with_retry
from .client import PostgresClient
from .connections import connect, one_line, quote_ident


class PostgresCommands(PostgresClient):
    """The remote-command and notification operations of :class:`~.backend.PostgresBackend`."""

    def send_command(self, identity: str, command: Mapping[str, Any]) -> bool:
        (queued,) = self._fetch(
            "send_command",
            (self.namespace, identity, _dumps(command), COMMAND_TTL_MS, self.channel),
        )
        return bool(queued)

    def ack_command(self, identity: str, command_id: str, at: float) -> None:
        self._fetch("ack_command", (self.namespace, command_id, identity, at, ACK_TTL_MS))

    def command_acks(self, command_id: str) -> dict[str, float]:
        rows = self._rows(
            f"SELECT identity, acked_at FROM {self._s}.pb_acks WHERE namespace = %s "
            "AND command_id = %s AND expires_at > clock_timestamp()",
            (self.namespace, command_id),
        )
        return {str(identity): float(at) for identity, at in rows}

    def listen(self, on_event: Callable[[str], None], stop: StopSignal) -> None:
        def listen_once(subscribed: Callable[[], None]) -> None:
            conn = connect(
                self.target.conninfo,
                purpose=f"{self.namespace} listener",
                display=self.display_url,
            )
            try:
                conn.execute(f"LISTEN {quote_ident(self.channel)}")
                subscribed()
                while not stop.is_set():
                    # notifies() ends after the timeout, so a set ``stop`` is seen promptly.
                    for note in conn.notifies(timeout=0.5):
                        on_event(note.payload)
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.close()

        listen_with_retry(
            listen_once,
            on_event,
            stop,
            failures=(psycopg.Error, BackendError),
            what=f"LISTEN on PostgreSQL at {self.display_url}",
            explain=one_line,
        )
