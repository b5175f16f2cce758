"""How many slots of one job each member gets: water-filling in proportion to capacity."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction

from .member import Member

__all__ = ["targets"]


def targets(
    eligible: Sequence[Member],
    room: Mapping[str, int],
    kept: Mapping[str, Sequence[int]],
    count: int,
    load: Mapping[str, int],
    weight: int,
) -> dict[str, int]:
    """Spread ``count`` slots over ``eligible`` in proportion to capacity, within ``room``.

    Every member gets the floor or the ceiling of its exact share, and a member whose room is
    below its share gets what fits while the rest is spread over the others the same way.
    ``kept`` (identity -> indexes it may keep) steers the spare slots of the rounding to the
    members already running them; ``load`` (identity -> weighted slots placed so far, in the
    same integer unit as ``weight``) then steers them to the least loaded members.
    """
    open_members = [m for m in eligible if m.capacity > 0 and room[m.identity] > 0]
    remaining = count
    total = sum(member.capacity for member in open_members)
    result: dict[str, int] = {}

    def short(member: Member) -> bool:
        # Its exact share remaining * capacity / total is more than it has room for.
        return room[member.identity] * total < remaining * member.capacity

    if remaining and any(short(member) for member in open_members):
        # Fill the tightest members first: each one filled only raises the share of the rest,
        # so once a member has room for its share, every later one has too.
        open_members.sort(key=lambda m: Fraction(room[m.identity], m.capacity))
        filled = 0
        while filled < len(open_members) and short(open_members[filled]):
            member = open_members[filled]
            result[member.identity] = room[member.identity]
            remaining -= room[member.identity]
            total -= member.capacity
            filled += 1
        open_members = open_members[filled:]
    if not remaining or not open_members:
        return result

    floors = [remaining * member.capacity // total for member in open_members]
    leftover = remaining - sum(floors)

    def rank(position: int) -> tuple[bool, bool, float, int, int, str]:
        # A spare slot goes to a fractional share only, so every member stays within floor and
        # ceil of its exact share. Among those, members already running more than their floor
        # come first: any other choice would stop one of their workers to start one elsewhere.
        # Then the member whose weighted load would be lowest relative to its capacity, so
        # the spare slots of many jobs (heavy ones above all) do not all land on one process;
        # then the largest remainder, the most held, and identity.
        member = open_members[position]
        remainder = remaining * member.capacity % total
        surplus = len(kept.get(member.identity, ())) - floors[position]
        # A float: IEEE division rounds the same on every process, so every process ranks
        # alike; two loads whose ratios round to one float tie and go on to the next keys.
        after = (load.get(member.identity, 0) + floors[position] * weight) / member.capacity
        return (remainder == 0, surplus <= 0, after, -remainder, -surplus, member.identity)

    if leftover:
        for position in sorted(range(len(open_members)), key=rank)[:leftover]:
            floors[position] += 1
    for member, target in zip(open_members, floors, strict=True):
        result[member.identity] = target
    return result
