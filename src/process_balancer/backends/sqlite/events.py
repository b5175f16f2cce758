"""Wake-ups for the SQLite backend, which has no notifications: listeners poll a table.

Writers add a row to ``pb_events`` inside the transaction that makes the change. Each
listener reads the rows past the last sequence number it saw every :data:`POLL_INTERVAL`
seconds: one indexed range read, usually empty, that never blocks a writer in WAL mode.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from ..base import BackendError, StopSignal
from ..common import listen_with_retry
from .connection import Database, connect

#: Seconds between two reads of the events table by a listener: wake-ups arrive this late.
POLL_INTERVAL = 0.05


def listen(db: Database, namespace: str, on_event: Callable[[str], None], stop: StopSignal) -> None:
    """Call ``on_event`` for each event of ``namespace`` until ``stop`` is set (Backend.listen)."""

    def listen_once(subscribed: Callable[[], None]) -> None:
        conn: sqlite3.Connection | None = None
        try:
            with db.errors():
                conn = connect(db.path)
                last = int(
                    conn.execute("SELECT COALESCE(MAX(seq), 0) FROM pb_events").fetchone()[0]
                )
                subscribed()
                while not stop.wait(POLL_INTERVAL):
                    last = _poll(conn, namespace, last, on_event)
        finally:
            if conn is not None:
                conn.close()

    listen_with_retry(
        listen_once,
        on_event,
        stop,
        failures=(BackendError,),
        what=f"reading events from {db.describe()}",
    )


def _poll(
    conn: sqlite3.Connection, namespace: str, last: int, on_event: Callable[[str], None]
) -> int:
    rows = conn.execute(
        "SELECT seq, namespace, message FROM pb_events WHERE seq > ? ORDER BY seq", (last,)
    ).fetchall()
    if rows and rows[0][0] > last + 1:
        # Rows this listener never saw were trimmed (it fell far behind): wake the manager
        # so that it reads the state afresh.
        on_event("assignment")
    for seq, event_namespace, message in rows:
        last = int(seq)
        if event_namespace == namespace:
            on_event(str(message))
    return last
