"""A job that logs every *record* (slot, process, fencing token, start, end), and the checks
the fault tests make on that log.

Iteration intervals cannot tell a holder that keeps working after it lost its slot from one
that stops at the next record boundary; records can. A record that was already running when
its process was frozen (SIGSTOP) necessarily ends after the freeze: tests exclude records
started before a given time, which is what fencing tokens are for.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import process_balancer


class RecordLoggingJob(process_balancer.Base):
    """Claims ``records`` records per iteration, each ``record_time`` seconds long, and
    appends one line per record to ``options['record_log']``."""

    def lock_records(self) -> list[int]:
        return list(range(int(self.options.get("records", 10))))

    def process_record(self, record: int) -> None:
        started = time.time()
        time.sleep(float(self.options.get("record_time", 0.02)))
        entry = {
            "job": self.job_id,
            "slot": self.worker_index,
            "pid": os.getpid(),
            "fence": self.fencing_token,
            "start": started,
            "end": time.time(),
        }
        line = (json.dumps(entry) + "\n").encode()
        fd = os.open(self.options["record_log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def unlock_records(self) -> None:
        pass


@dataclass(frozen=True)
class Record:
    job: str
    slot: int
    pid: int
    fence: int
    start: float
    end: float


def read_records(path: Path) -> list[Record]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines(keepends=True):
        if line.endswith("\n"):
            raw: dict[str, Any] = json.loads(line)
            records.append(Record(**raw))
    return sorted(records, key=lambda r: (r.job, r.slot, r.start))


def overlaps(records: list[Record], since: float = 0.0) -> list[tuple[Record, Record]]:
    """Pairs of records of one slot, by different processes, that overlap in time, among
    records started at or after ``since``."""
    found = []
    by_slot: dict[tuple[str, int], list[Record]] = {}
    for record in records:
        if record.start >= since:
            by_slot.setdefault((record.job, record.slot), []).append(record)
    for group in by_slot.values():
        for i, first in enumerate(group):
            for second in group[i + 1 :]:
                if second.start >= first.end:
                    break
                if second.pid != first.pid:
                    found.append((first, second))
    return found


def token_regressions(records: list[Record]) -> list[tuple[Record, Record]]:
    """Records of a slot that began a new holding with a token lower than an earlier one."""
    found = []
    last: dict[tuple[str, int], Record] = {}
    for record in sorted(records, key=lambda r: r.start):
        key = (record.job, record.slot)
        previous = last.get(key)
        if previous is not None and record.fence < previous.fence:
            found.append((previous, record))
        if previous is None or record.fence >= previous.fence:
            last[key] = record
    return found


def slots_running(records: list[Record], since: float) -> set[tuple[str, int]]:
    return {(r.job, r.slot) for r in records if r.start >= since}
