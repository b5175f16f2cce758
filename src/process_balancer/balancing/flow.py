"""Slot counts per job and member while an assignment is built, and the max-flow repair.

The proportional rule (``spread.py``) places one job at a time into the room earlier jobs
left. With restricted job sets, required tags and binding capacity, that can leave a slot
unplaced while a process that could run it idles: an earlier job used the room on the only
processes the later one may use, though it could have run elsewhere. Seen as a flow network
(source -> job, capacity its count; job -> each process allowed to run it; process -> sink,
capacity ``max_threads``) that is a flow that is not maximum, and an *augmenting path*
mends it: job J's slot goes to a full process P, one slot of job K moves from P to a process
Q that K may use, and so on until a process with room ends the chain.

The search runs over *classes*, not processes: processes allowed to run the same jobs with
the same preference are interchangeable for the flow, so a class is one node with the summed
room, and the graph stays as small as the number of distinct process kinds even with 10,000
processes. A breadth-first search finds a shortest chain (fewest slots moved), visiting jobs
by id and classes in a fixed order; a chain carries as many slots at once as its narrowest
link allows. Jobs are repaired in id order, and a repair never lowers the number of slots of
any job placed before, so the result places the most slots any assignment can, with the
earlier job ids winning a shortage (a lexicographically maximum flow).

Within a class, a slot that must move leaves the member holding the most slots of its job and
arrives at the member holding the fewest (then the one with the most room), so each job stays
as evenly spread inside the class as the chain allows. Nothing here looks at the previous
assignment: the caller keeps the result sticky (see ``assign.py``).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .member import Member
from .placement import JobPlacement

__all__ = ["Plan"]


@dataclass
class _Classes:
    """Members grouped by what they may run, with their summed room and slot counts."""

    of: dict[str, int]
    members: list[list[str]]
    room: list[int]
    #: class -> job id -> slots of that job in the class (only counts above zero).
    units: list[dict[str, int]]
    #: job id -> classes allowed to run it, the most preferred first.
    by_job: dict[str, list[int]] = field(default_factory=dict)


class Plan:
    """How many slots of each job each member runs, with its room and weighted load."""

    def __init__(
        self,
        roster: Sequence[Member],
        eligible: Mapping[str, Sequence[Member]],
        rules: Mapping[str, JobPlacement],
        weights: Mapping[str, int],
    ) -> None:
        self.room = {member.identity: member.capacity for member in roster}
        self.load = dict.fromkeys(self.room, 0)
        #: job id -> identity -> slots (only counts above zero).
        self.units: dict[str, dict[str, int]] = {}
        self._roster = roster
        self._eligible = eligible
        self._rules = rules
        self._weights = weights
        self._classes: _Classes | None = None

    def add(self, job_id: str, identity: str, amount: int) -> None:
        """Give ``identity`` ``amount`` more slots of ``job_id`` (fewer when negative)."""
        per_member = self.units.setdefault(job_id, {})
        now = per_member.get(identity, 0) + amount
        if now:
            per_member[identity] = now
        else:
            per_member.pop(identity, None)
        self.room[identity] -= amount
        self.load[identity] += amount * self._weights.get(job_id, 1)
        classes = self._classes
        if classes is not None:
            number = classes.of[identity]
            classes.room[number] -= amount
            units = classes.units[number]
            units[job_id] = units.get(job_id, 0) + amount
            if not units[job_id]:
                del units[job_id]

    def placed(self, job_id: str) -> int:
        """How many slots of ``job_id`` the plan places."""
        return sum(self.units.get(job_id, {}).values())

    def augment(self, job_id: str, need: int) -> int:
        """Place up to ``need`` more slots of ``job_id`` by moving slots of earlier jobs along
        shortest augmenting paths; returns how many were placed."""
        classes = self._class_index()
        placed = 0
        while placed < need:
            path = _shortest_path(classes, job_id)
            if path is None:
                break
            start, end, links = path
            amount = min(need - placed, classes.room[end])
            for source, moved, _ in links:
                amount = min(amount, classes.units[source][moved])
            for source, moved, target in reversed(links):
                self._take(moved, classes.members[source], amount)
                self._give(moved, classes.members[target], amount)
            self._give(job_id, classes.members[start], amount)
            placed += amount
        return placed

    # -- internals ------------------------------------------------------------------------------

    def _class_index(self) -> _Classes:
        if self._classes is not None:
            return self._classes
        signature: dict[str, list[tuple[str, int]]] = {m.identity: [] for m in self._roster}
        for job_id in sorted(self._eligible):
            rule = self._rules[job_id]
            for member in self._eligible[job_id]:
                signature[member.identity].append((job_id, rule.preference(member)))
        numbers: dict[tuple[tuple[str, int], ...], int] = {}
        classes = _Classes(of={}, members=[], room=[], units=[])
        for member in self._roster:  # sorted by identity: class numbers are deterministic
            key = tuple(signature[member.identity])
            if not key or member.capacity <= 0:
                continue
            number = numbers.get(key)
            if number is None:
                number = numbers[key] = len(classes.members)
                classes.members.append([])
                classes.room.append(0)
                classes.units.append({})
                for job_id, _score in key:
                    classes.by_job.setdefault(job_id, []).append(number)
            classes.of[member.identity] = number
            classes.members[number].append(member.identity)
            classes.room[number] += self.room[member.identity]
        for job_id, per_member in self.units.items():
            for identity, amount in per_member.items():
                units = classes.units[classes.of[identity]]
                units[job_id] = units.get(job_id, 0) + amount
        scores = {key_number: dict(key) for key, key_number in numbers.items()}
        for job_id, numbers_of_job in classes.by_job.items():
            numbers_of_job.sort(key=lambda n: (-scores[n][job_id], n))
        self._classes = classes
        return classes

    def _take(self, job_id: str, members: list[str], amount: int) -> None:
        per_member = self.units.get(job_id, {})
        # From the member holding the most slots of the job, then by identity.
        heap = [(-per_member[i], i) for i in members if per_member.get(i, 0) > 0]
        heapq.heapify(heap)
        for _ in range(amount):
            _, identity = heapq.heappop(heap)
            self.add(job_id, identity, -1)
            if per_member.get(identity, 0):
                heapq.heappush(heap, (-per_member[identity], identity))

    def _give(self, job_id: str, members: list[str], amount: int) -> None:
        # To the member holding the fewest slots of the job, then the most room, identity.
        per_member = self.units.get(job_id, {})
        heap = [(per_member.get(i, 0), -self.room[i], i) for i in members if self.room[i] > 0]
        heapq.heapify(heap)
        for _ in range(amount):
            _, _, identity = heapq.heappop(heap)
            self.add(job_id, identity, 1)
            if self.room[identity] > 0:
                now = self.units[job_id][identity]
                heapq.heappush(heap, (now, -self.room[identity], identity))


def _shortest_path(
    classes: _Classes, job_id: str
) -> tuple[int, int, list[tuple[int, str, int]]] | None:
    """A shortest chain from a class that may run ``job_id`` to a class with room.

    Returns (start class, end class, links), each link (source class, job whose slot moves,
    target class), or None when there is none: then no more slots of the job fit anywhere.
    """
    parent: dict[int, tuple[int, str] | None] = {}
    queue: deque[int] = deque()
    for number in classes.by_job.get(job_id, ()):
        parent[number] = None
        queue.append(number)
    while queue:
        number = queue.popleft()
        if classes.room[number] > 0:
            links: list[tuple[int, str, int]] = []
            node = number
            step = parent[node]
            while step is not None:
                source, moved = step
                links.append((source, moved, node))
                node = source
                step = parent[node]
            links.reverse()
            return node, number, links
        for moved in sorted(classes.units[number]):
            if moved == job_id:
                continue
            for target in classes.by_job.get(moved, ()):
                if target not in parent:
                    parent[target] = (number, moved)
                    queue.append(target)
    return None
