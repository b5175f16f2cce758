"""Reading a SQLite group without trusting it, and ``process-balancer repair`` on it.

SQLite keeps whatever type a value was written with, so any column may hold text, a number or
a blob: the snapshot is read raw here and decoded by :func:`~.codec.decode_group`, and repair
removes exactly the values that read failed on, inside one write transaction.
"""

from __future__ import annotations

import sqlite3
import time

from ..base import RepairReport
from ..codec import RawGroup, RawMember, decode_group, version_value
from .connection import Scope, emit


def read_group(scope: Scope, conn: sqlite3.Connection) -> RawGroup:
    """Everything a snapshot holds, undecoded, with where each value lives."""
    ns = scope.namespace
    now = time.time()
    group = conn.execute(
        "SELECT version, assignment_version, unplaced, partitions FROM pb_groups "
        "WHERE namespace = ?",
        (ns,),
    ).fetchone()
    version, av, unplaced, partitions = group if group is not None else (None,) * 4
    raw = RawGroup(
        now=now,
        version=(scope.group_where("version"), version),
        assignment_version=(scope.group_where("assignment_version"), av),
        unplaced=(scope.group_where("unplaced"), unplaced),
        partitions=(scope.group_where("partitions"), partitions),
    )
    # A deadline that is not a number sorts after every number: such rows are read, and left
    # out by the decoding, which names them.
    for identity, deadline, traits, info in conn.execute(
        "SELECT identity, deadline, traits, info FROM pb_members "
        "WHERE namespace = ? AND deadline > ? ORDER BY deadline",
        (ns, now),
    ):
        member = scope.where("pb_members", f"identity {identity!r}")
        raw.members.append(
            RawMember(
                identity, deadline, traits, info, member, f"{member}, traits", f"{member}, info"
            )
        )
    for table, target in (("pb_counts", raw.counts), ("pb_paused", raw.paused)):
        for job_id, value in conn.execute(
            f"SELECT job_id, count FROM {table} WHERE namespace = ?", (ns,)
        ):
            target.append((job_id, value, scope.where(table, f"job {job_id!r}")))
    for identity, slots in conn.execute(
        "SELECT identity, slots FROM pb_assignment WHERE namespace = ?", (ns,)
    ):
        raw.assignment.append(
            (identity, slots, scope.where("pb_assignment", f"identity {identity!r}"))
        )
    return raw


def repair(scope: Scope, *, apply: bool) -> RepairReport:
    """See :meth:`Backend.repair`: one write transaction, nothing written without ``apply``."""
    ns = scope.namespace
    with scope.db.transaction(write=apply) as conn:
        raw = read_group(scope, conn)
        decoded = decode_group(raw, lenient=True)
        paused_jobs = {job_id for job_id, _, _ in raw.paused}
        actions: list[str] = []
        for problem in decoded.problems:
            item = problem.item
            if problem.part == "members":
                actions.append(f"{problem.where}: removed ({problem.detail})")
                if apply:
                    conn.execute(
                        "DELETE FROM pb_members WHERE namespace = ? AND identity = ? "
                        "AND deadline IS ?",
                        (ns, item, problem.raw),
                    )
            elif problem.part in ("traits", "info"):
                actions.append(
                    f"{problem.where}: cleared ({problem.detail}); the process sends it again "
                    "at its next heartbeat"
                )
                if apply:
                    conn.execute(
                        f"UPDATE pb_members SET {problem.part} = '{{}}' WHERE namespace = ? "
                        f"AND identity = ? AND {problem.part} IS ?",
                        (ns, item, problem.raw),
                    )
            elif problem.part == "counts" and item in paused_jobs:
                actions.append(f"{problem.where}: set to 0 ({problem.detail}); the job is paused")
                if apply:
                    conn.execute(
                        "UPDATE pb_counts SET count = 0 WHERE namespace = ? AND job_id = ?",
                        (ns, item),
                    )
            elif problem.part in ("counts", "paused"):
                table = "pb_counts" if problem.part == "counts" else "pb_paused"
                outcome = (
                    "the job runs its config count until one is set with `process-balancer scale`"
                    if problem.part == "counts"
                    else "the job is no longer paused and keeps its current count"
                )
                actions.append(f"{problem.where}: removed ({problem.detail}); {outcome}")
                if apply:
                    conn.execute(
                        f"DELETE FROM {table} WHERE namespace = ? AND job_id = ?", (ns, item)
                    )
            elif problem.part == "partitions":
                actions.append(
                    f"{problem.where}: removed ({problem.detail}); the next assignment starts "
                    "each job at a new generation"
                )
                if apply:
                    conn.execute(
                        "UPDATE pb_groups SET partitions = NULL WHERE namespace = ? "
                        "AND partitions IS ?",
                        (ns, problem.raw),
                    )
        group = scope.where("pb_groups", f"namespace {ns!r}")
        actions.append(
            f"{scope.where('pb_assignment', 'every row')}, {group}, unplaced: cleared; the group "
            "computes a new assignment"
        )
        old = version_value(raw.version[1])
        version = max(int(time.time() * 1000), (old or 0) + 1)
        actions.append(
            f"{group}, version: set to {version}, past every earlier version, and "
            "assignment_version to 0, so every process recomputes"
        )
        if apply:
            conn.execute("DELETE FROM pb_assignment WHERE namespace = ?", (ns,))
            conn.execute(
                "INSERT INTO pb_groups (namespace, version, assignment_version, unplaced) "
                "VALUES (?, ?, 0, '{}') ON CONFLICT (namespace) DO UPDATE SET "
                "version = excluded.version, assignment_version = 0, unplaced = '{}'",
                (ns, version),
            )
            emit(conn, ns, "state")
    return RepairReport(actions, decoded.snapshot.counts, decoded.paused, apply)
