"""The promises a simulated group is held to, checked as the events happen.

- **Exclusion**: two records of one slot by different processes never overlap in time, unless
  the older holder was frozen (SIGSTOP) since its iteration began *and* its writes are refused
  because the slot's fenced resource has seen the newer fencing token. A record claims the
  token when its iteration begins (``lock_records``) and writes with it when it ends, as a job
  writing with its token would. Slow, lost and late calls, partitions and clock steps explain
  no overlap: the runtime stops a holder before anyone else may start.
- **Fencing**: every lock the backend grants for a slot carries a token above every token it
  granted for that slot before.
- **Barrier**: the records of a partitioned job under two generations (two worker counts)
  never overlap in time, unless the older generation's process was frozen since its
  iteration began: every slot of the old count stops before any slot of the new one starts.
- **Bounded moves**: an assignment written after one process joined, with nothing else
  changed, moves only the slots the newcomer takes.
- **Completeness, balance, capacity and liveness** are checked once the faults are over (see
  :meth:`Checker.settled`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RecordRun:
    """One record being processed, or processed."""

    slot: tuple[str, int]
    process: str
    token: int
    start: float
    end: float | None = None
    accepted: bool | None = None
    #: The process's freeze count when the record began, and whether it froze since its
    #: iteration began (a pause explains an overlap; nothing else does).
    freezes: int = 0
    paused: bool = False
    #: The job's generation the record runs under (a partitioned job's; else None).
    generation: int | None = None


@dataclass
class Violation:
    """A broken promise: what, when, and the events it involves."""

    invariant: str
    at: float
    detail: str


@dataclass
class _Slot:
    highest: int = 0  # the highest token the slot's resource has seen
    granted: int = 0  # the highest token the backend granted
    runs: list[RecordRun] = field(default_factory=list)  # recent finished records
    first_after_quiet: float | None = None
    last_start: float = float("-inf")


class Checker:
    """Collects :class:`Violation` s; the simulation stops at the first one."""

    #: Finished records older than this (simulated seconds) cannot overlap a new one: no
    #: record lasts that long.
    KEEP = 60.0

    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self._slots: dict[tuple[str, int], _Slot] = {}
        self.refused = 0
        self.records = 0
        self.quiet_at: float | None = None
        #: Per partitioned job and generation: the record that ended last, and the one that
        #: ended last of those never paused (for the barrier).
        self._generations: dict[str, dict[int, tuple[RecordRun, RecordRun | None]]] = {}

    def _slot(self, slot: tuple[str, int]) -> _Slot:
        found = self._slots.get(slot)
        if found is None:
            found = self._slots[slot] = _Slot()
        return found

    def fail(self, invariant: str, at: float, detail: str) -> None:
        self.violations.append(Violation(invariant, at, detail))

    # -- fencing -----------------------------------------------------------------------------

    def granted(self, slot: tuple[str, int], holder: str, token: int, at: float) -> None:
        state = self._slot(slot)
        if token <= state.granted:
            self.fail(
                "fencing",
                at,
                f"lock {slot[0]}:{slot[1]} granted to {holder} with token {token}, not above "
                f"the {state.granted} granted before",
            )
        state.granted = max(state.granted, token)

    def claim(self, slot: tuple[str, int], token: int) -> bool:
        """The resource of ``slot`` sees ``token`` (an iteration begins); False if refused."""
        state = self._slot(slot)
        if token < state.highest:
            self.refused += 1
            return False
        state.highest = token
        return True

    # -- exclusion ---------------------------------------------------------------------------

    def record_start(
        self, slot: tuple[str, int], process: str, token: int, at: float, freezes: int
    ) -> RecordRun:
        state = self._slot(slot)
        state.last_start = at
        if self.quiet_at is not None and at >= self.quiet_at and state.first_after_quiet is None:
            state.first_after_quiet = at
        return RecordRun(slot, process, token, at, freezes=freezes)

    def record_end(self, run: RecordRun, at: float, freezes: int) -> None:
        """The record writes with its token: accepted unless a newer one was seen. A record
        of another process that overlaps it is allowed only when the older of the two was
        frozen (SIGSTOP) since its iteration began and its write is refused."""
        state = self._slot(run.slot)
        run.end = at
        run.paused = freezes != run.freezes
        run.accepted = run.token >= state.highest
        self.records += 1
        if not run.accepted:
            self.refused += 1
        else:
            state.highest = run.token
        for other in state.runs:
            if other.process == run.process or other.end is None or other.end <= run.start:
                continue
            older, newer = (other, run) if other.token < run.token else (run, other)
            if older.accepted and newer.accepted:
                why = "both writes were accepted"
            elif not older.paused:
                why = (
                    f"{older.process} was never paused: it kept running past the point where "
                    "it had to stop"
                )
            else:
                continue
            self.fail(
                "exclusion",
                at,
                f"slot {run.slot[0]}:{run.slot[1]} ran on {older.process} (token {older.token}, "
                f"{older.start:.3f}-{older.end:.3f}) and on {newer.process} (token "
                f"{newer.token}, {newer.start:.3f}-{newer.end:.3f}) at once; {why}",
            )
        state.runs = [r for r in state.runs if r.end is not None and r.end > at - self.KEEP]
        state.runs.append(run)
        if run.generation is not None:
            self._barrier(run, at)

    def _barrier(self, run: RecordRun, at: float) -> None:
        """A partitioned job's records of two generations overlap only if the one of the
        older (lower) generation was frozen since its iteration began.

        Records are checked as they end, so every one seen before ended before this one:
        one overlaps it exactly when it ended after this one began. Per generation, the
        record that ended last (and the one that ended last of those never paused) is all
        that needs keeping."""
        job = run.slot[0]
        assert run.generation is not None
        latest = self._generations.setdefault(job, {})
        for generation, (last, last_steady) in latest.items():
            if generation == run.generation:
                continue
            # The older of the two must have been paused: an older generation's steady
            # record, or any newer one when this record is the older and was never paused.
            older_other = generation < run.generation
            other = last_steady if older_other else (None if run.paused else last)
            if other is None or other.end is None or other.end <= run.start:
                continue
            older, newer = (other, run) if older_other else (run, other)
            self.fail(
                "barrier",
                at,
                f"job {job}: {older.slot[1]} on {older.process} (generation "
                f"{older.generation}, {older.start:.3f}-{older.end:.3f}) overlaps "
                f"{newer.slot[1]} on {newer.process} (generation {newer.generation}, "
                f"{newer.start:.3f}-{newer.end:.3f}); the older one was never paused",
            )
        steady = latest.get(run.generation, (run, None))[1]
        latest[run.generation] = (run, steady if run.paused else run)

    # -- moves -------------------------------------------------------------------------------

    def assignment_written(
        self,
        before: dict[str, dict[str, list[int]]],
        after: dict[str, dict[str, list[int]]],
        same_otherwise: bool,
        at: float,
    ) -> None:
        """A join with nothing else changed moves only what the newcomer takes."""
        joined = set(after) - set(before)
        if not same_otherwise or len(joined) != 1 or not set(before) <= set(after):
            return
        (newcomer,) = joined
        owner_before = _owners(before)
        moved = [
            (slot, owner_before[slot], owner)
            for slot, owner in _owners(after).items()
            if slot in owner_before and owner_before[slot] != owner and owner != newcomer
        ]
        if moved:
            shown = ", ".join(f"{j}:{i} {a}->{b}" for (j, i), a, b in moved[:5])
            self.fail(
                "bounded moves",
                at,
                f"{newcomer} joined and slots moved between other processes: {shown}",
            )

    # -- after the faults --------------------------------------------------------------------

    def first_run_after_quiet(self, slot: tuple[str, int]) -> float | None:
        state = self._slots.get(slot)
        return None if state is None else state.first_after_quiet

    def last_start(self, slot: tuple[str, int]) -> float:
        state = self._slots.get(slot)
        return float("-inf") if state is None else state.last_start


def _owners(assignment: dict[str, dict[str, Any]]) -> dict[tuple[str, int], str]:
    return {
        (job, index): member
        for member, jobs in assignment.items()
        for job, indexes in jobs.items()
        for index in indexes
    }
