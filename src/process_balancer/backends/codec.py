"""Values as the backends store them: compact JSON, and decoding that reports bad data.

Anything read back from a backend may have been written by another version, another program
or a person; a value that does not decode is a :class:`CorruptStateError` naming where it was
found, never a crash deep inside the balancing logic.
"""

from __future__ import annotations

import json
from typing import Any

from .base import CorruptStateError


def dumps(value: Any) -> str:
    """Compact JSON with sorted keys, so equal values are equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def integer(raw: Any, where: str) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise CorruptStateError(f"{where} holds {raw!r}, expected an integer") from None


def loads_dict(raw: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        raise CorruptStateError(f"{where} holds unreadable data {raw[:80]!r}") from None
    if not isinstance(value, dict):
        raise CorruptStateError(f"{where} holds {raw[:80]!r}, expected a JSON object")
    return value


def parse_slots(raw: str, where: str) -> dict[str, tuple[int, ...]]:
    data = loads_dict(raw, where)
    slots: dict[str, tuple[int, ...]] = {}
    for job_id, indexes in data.items():
        if not isinstance(indexes, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in indexes
        ):
            raise CorruptStateError(f"{where} lists {indexes!r} for job {job_id!r}")
        slots[job_id] = tuple(indexes)
    return slots
