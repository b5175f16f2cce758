"""The seed README's queue job in Python: drain a PostgreSQL table from many processes.

Every worker index claims up to ``batch_size`` queued rows of ``queue_records`` with
``FOR UPDATE SKIP LOCKED``, so concurrent workers never claim the same row, and stamps them
with its index (``lock_owner``) and its worker lock's fencing token (``lock_fence``). Each row
is then processed and marked done by a write that only lands while the row still carries both,
and ``unlock_records`` hands back what the iteration did not get to.

The fencing token is what keeps a paused holder harmless. If a process stalls (SIGSTOP, a long
GC, a network partition) long enough for its worker lock to move, the next holder of the same
index gets a higher token and takes over the rows the stalled one left claimed; when the
stalled process wakes, its writes name the old token and change nothing.

Run it with ``process-balancer run -c examples/queue/process_balancer.yml -r
examples/queue/jobs.py`` from the repository root; see README.md next to this file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from typing import Any, NamedTuple

import psycopg

import process_balancer

logger = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_BATCH_SIZE = 1000
DEFAULT_IDLE_SLEEP = 1.0

# Rows an earlier holder of this worker index left claimed: it crashed, or lost its worker
# lock while paused. Holding the index's lock now, this worker is their only rightful owner.
ADOPT_SQL = """
UPDATE queue_records
SET lock_fence = %(fence)s, locked_at = now()
WHERE lock_owner = %(owner)s AND status = 'queued'
  AND (lock_fence IS NULL OR lock_fence < %(fence)s)
RETURNING id, payload
"""

CLAIM_SQL = """
UPDATE queue_records
SET lock_owner = %(owner)s, lock_fence = %(fence)s, locked_at = now()
WHERE id IN (
    SELECT id FROM queue_records
    WHERE status = 'queued' AND lock_owner IS NULL
    ORDER BY id
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, payload
"""

DONE_SQL = """
UPDATE queue_records
SET status = 'done', lock_owner = NULL, lock_fence = NULL, result = %(result)s,
    processed_by = %(fence)s, processed_pid = %(pid)s, processed_at = now(),
    process_count = process_count + 1
WHERE id = %(id)s AND lock_owner = %(owner)s AND lock_fence = %(fence)s
"""

UNLOCK_SQL = """
UPDATE queue_records
SET lock_owner = NULL, lock_fence = NULL, locked_at = NULL
WHERE lock_owner = %(owner)s AND status = 'queued' AND lock_fence IS NOT DISTINCT FROM %(fence)s
"""


class QueueRecord(NamedTuple):
    """One claimed row."""

    id: int
    payload: str


def checksum(payload: str) -> str:
    """The work done per row: a SHA-256 of the payload, stored as the row's result."""
    return hashlib.sha256(payload.encode()).hexdigest()


def _option(options: dict[str, Any], key: str, default: float, *, minimum: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ValueError(f"option {key!r} must be a number >= {minimum}, got {value!r}")
    return value


class ProcessQueue(process_balancer.Base):
    """Claims queued rows in batches and marks each one done, guarded by the fencing token.

    Options: ``database_url`` (else ``$DATABASE_URL``, else a local ``test`` database),
    ``batch_size`` (rows claimed per iteration, default 1000), ``idle_sleep`` (seconds to
    wait after an iteration that found nothing, default 1) and ``work_time`` (seconds of
    simulated work per row, default 0).
    """

    lock_driver = "simple_redis"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.database_url: str = (
            self.options.get("database_url")
            or os.environ.get("DATABASE_URL")
            or DEFAULT_DATABASE_URL
        )
        self.batch_size = int(_option(self.options, "batch_size", DEFAULT_BATCH_SIZE, minimum=1))
        self.idle_sleep = float(_option(self.options, "idle_sleep", DEFAULT_IDLE_SLEEP, minimum=0))
        # Seconds of simulated work per row (a remote call, say), to watch a slow drain.
        self.work_time = float(_option(self.options, "work_time", 0.0, minimum=0))
        self._conn: psycopg.Connection[Any] | None = None
        # The fencing token rows may be claimed under, from the moment a claim is sent until
        # unlock_records has released them; None when this worker holds no rows.
        self._claim_fence: int | None = None

    # -- the job contract --------------------------------------------------------------------

    def lock_records(self) -> list[QueueRecord]:
        fence = self.fencing_token
        if fence is None:
            raise RuntimeError(
                f"{self!r} has no fencing token; process-balancer sets one for every iteration "
                "(set job.fencing_token when calling the job directly)"
            )
        conn = self._connection()
        try:
            records = self._claim(conn, fence)
        except psycopg.OperationalError as exc:
            if not conn.broken:
                raise
            # The claim may have committed before the connection dropped; if so, the retry
            # adopts those rows, since they carry this worker's index.
            logger.warning(
                "job %s worker %d: lost the database connection (%s); reconnecting",
                self.job_id,
                self.worker_index,
                exc,
            )
            records = self._claim(self._connection(), fence)
        if not records:
            self._claim_fence = None
            self.status_sleep(self.idle_sleep)
        return records

    def process_record(self, record: QueueRecord) -> None:
        if self.work_time:
            time.sleep(self.work_time)
        cursor = self._connection().execute(
            DONE_SQL,
            {
                "id": record.id,
                "result": checksum(record.payload),
                "owner": self.worker_index,
                "fence": self.fencing_token,
                "pid": os.getpid(),
            },
        )
        if cursor.rowcount == 0:
            logger.warning(
                "job %s worker %d: row %d was taken over by a newer holder of this worker index "
                "(fencing token %s is stale); skipped it",
                self.job_id,
                self.worker_index,
                record.id,
                self.fencing_token,
            )

    def unlock_records(self) -> None:
        if self._claim_fence is None:
            return
        self._connection().execute(
            UNLOCK_SQL, {"owner": self.worker_index, "fence": self._claim_fence}
        )
        self._claim_fence = None

    def after_perform(self) -> None:
        if self.stopping:
            self.close()

    # -- the connection ----------------------------------------------------------------------

    def close(self) -> None:
        """Close this worker's database connection; the next claim opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            conn = self._conn = psycopg.connect(
                self.database_url,
                autocommit=True,
                application_name=f"process_balancer {self.job_id}:{self.worker_index}",
            )
        return conn

    def _claim(self, conn: psycopg.Connection[Any], fence: int) -> list[QueueRecord]:
        params = {"owner": self.worker_index, "fence": fence, "batch": self.batch_size}
        self._claim_fence = fence
        adopted = [QueueRecord(*row) for row in conn.execute(ADOPT_SQL, params)]
        if adopted:
            logger.warning(
                "job %s worker %d: took over %d row(s) an earlier holder of this worker index "
                "left claimed; processing them under fencing token %d",
                self.job_id,
                self.worker_index,
                len(adopted),
                fence,
            )
        claimed: list[QueueRecord] = []
        if len(adopted) < self.batch_size:
            params["batch"] = self.batch_size - len(adopted)
            claimed = [QueueRecord(*row) for row in conn.execute(CLAIM_SQL, params)]
        # RETURNING gives no order; claim order is id order.
        return sorted(adopted + claimed)


class ProcessQueueAdvisory(ProcessQueue):
    """The same job guarded by a PostgreSQL advisory lock per worker index instead of the
    coordination backend's lease lock: with a ``postgresql://`` backend the whole example runs
    on nothing but PostgreSQL (see process_balancer.postgres.yml)."""

    lock_driver = "advisory_lock"
