"""``process-balancer repair`` on a PostgreSQL group, in one transaction.

The columns are typed, so what can be unreadable is a jsonb value of the wrong shape (traits,
info, an assignment, unplaced slots, partitions, a command) and a count beyond the hard limit.
Readable partitions are kept, so generations keep increasing; gates (pb_gates) are lock state
and never touched. Rows are
locked in the order every other operation takes them: member rows, then the group's row, then
its counts, so repair cannot deadlock with a heartbeat or a scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from ...config.defaults import MAX_WORKERS_HARD_LIMIT
from ..base import RepairReport
from ..codec import RawGroup, decode_group

_NEW_VERSION = """
WITH t AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms)
UPDATE {s}.pb_groups SET
    version = CASE WHEN abs(version) < 9007199254740992 THEN greatest(version + 1, now_ms)
                   ELSE now_ms END,
    assignment_version = 0,
    unplaced = '{{}}'
FROM t
WHERE namespace = %s
RETURNING version
"""


@dataclass(frozen=True)
class Group:
    """Where a group lives: schema (as named and quoted), namespace, notification channel."""

    schema: str
    quoted_schema: str
    namespace: str
    channel: str


def repair(
    conn: psycopg.Connection[Any],
    group: Group,
    read: Callable[[psycopg.Connection[Any]], RawGroup],
    *,
    apply: bool,
) -> RepairReport:
    """See :meth:`Backend.repair`; ``conn`` is inside a transaction, ``read`` reads the
    group's snapshot through it."""
    s, ns = group.quoted_schema, group.namespace
    raw = read(conn)
    decoded = decode_group(raw, lenient=True)
    paused_jobs = {job_id for job_id, _, _ in raw.paused}
    actions: list[str] = []
    counts_touched = False
    partitions_raw = None
    for problem in decoded.problems:
        item = problem.item
        if problem.part in ("traits", "info"):
            actions.append(
                f"{problem.where}: cleared ({problem.detail}); the process sends it again at its "
                "next heartbeat"
            )
            if apply:
                conn.execute(
                    f"UPDATE {s}.pb_members SET {problem.part} = '{{}}' WHERE namespace = %s "
                    f"AND identity = %s AND {problem.part}::text = %s",
                    (ns, item, problem.raw),
                )
        elif problem.part == "counts":
            paused = item in paused_jobs
            outcome = (
                "set to 0; the job is paused"
                if paused
                else "removed; the job runs its config count until one is set with "
                "`process-balancer scale`"
            )
            actions.append(f"{problem.where}: {outcome} ({problem.detail})")
            counts_touched = True
        elif problem.part == "paused":
            actions.append(
                f"{problem.where}: removed ({problem.detail}); the job is no longer paused and "
                "keeps its current count"
            )
            counts_touched = True
        elif problem.part == "partitions":
            actions.append(
                f"{problem.where}: removed ({problem.detail}); the next assignment starts each "
                "job at a new generation"
            )
            partitions_raw = problem.raw
    where = f"{group.schema}.pb_groups[{ns}]"
    actions.append(
        f"{group.schema}.pb_assignments[{ns}/*], {where}.unplaced: cleared; the group computes "
        "a new assignment"
    )
    if not apply:
        actions.append(
            f"{where}.version: moved past every earlier version, and assignment_version set to 0, "
            "so every process recomputes"
        )
        return RepairReport(actions, decoded.snapshot.counts, decoded.paused, False)
    conn.execute(f"SELECT {s}.pb_lock_group(%s)", (ns,))
    if partitions_raw is not None:
        conn.execute(
            f"UPDATE {s}.pb_groups SET partitions = NULL WHERE namespace = %s "
            "AND partitions::text = %s",
            (ns, partitions_raw),
        )
    if counts_touched:
        limit = str(MAX_WORKERS_HARD_LIMIT)
        conn.execute(
            f"UPDATE {s}.pb_counts SET "
            f"resume_to = CASE WHEN resume_to > {limit} THEN NULL ELSE resume_to END, "
            f"count = CASE WHEN count > {limit} AND resume_to IS NOT NULL THEN 0 "
            f"WHEN count > {limit} THEN NULL ELSE count END "
            f"WHERE namespace = %s AND (count > {limit} OR resume_to > {limit})",
            (ns,),
        )
        conn.execute(
            f"DELETE FROM {s}.pb_counts WHERE namespace = %s AND count IS NULL "
            "AND resume_to IS NULL",
            (ns,),
        )
    conn.execute(f"DELETE FROM {s}.pb_assignments WHERE namespace = %s", (ns,))
    found = conn.execute(_NEW_VERSION.format(s=s), (ns,)).fetchone()
    version = found[0] if found is not None else None
    conn.execute(
        f"DELETE FROM {s}.pb_commands WHERE namespace = %s AND jsonb_typeof(command) <> 'object'",
        (ns,),
    )
    conn.execute("SELECT pg_notify(%s, 'state')", (group.channel,))
    actions.append(
        f"{where}.version: set to {version}, past every earlier version, and assignment_version "
        "to 0, so every process recomputes"
    )
    return RepairReport(actions, decoded.snapshot.counts, decoded.paused, True)
