"""Wake-ups for the SQLite backend, which has no notifications: listeners poll a table.

Writers add a row to ``pb_events`` inside the transaction that makes the change. Each
listener reads the rows past the last sequence number it saw every :data:`POLL_INTERVAL`
seconds: one indexed range read, usually empty, that never blocks a writer in WAL mode.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

from ..base import BackendError
from .connection import Database, connect

logger = logging.getLogger(__name__)

#: Seconds between two reads of the events table by a listener: wake-ups arrive this late.
POLL_INTERVAL = 0.05


def listen(
    db: Database, namespace: str, on_event: Callable[[str], None], stop: threading.Event
) -> None:
    """Call ``on_event`` for each event of ``namespace`` until ``stop`` is set (Backend.listen)."""
    delay = 0.1
    while not stop.is_set():
        conn: sqlite3.Connection | None = None
        try:
            with db.errors():
                conn = connect(db.path)
                last = int(
                    conn.execute("SELECT COALESCE(MAX(seq), 0) FROM pb_events").fetchone()[0]
                )
                on_event("subscribed")
                delay = 0.1
                while not stop.wait(POLL_INTERVAL):
                    last = _poll(conn, namespace, last, on_event)
        except BackendError as exc:
            logger.warning(
                "reading events from %s failed (%s); retrying in %.1fs",
                db.describe(),
                exc,
                delay,
            )
            stop.wait(delay)
            delay = min(delay * 2, 5.0)
        finally:
            if conn is not None:
                conn.close()


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
