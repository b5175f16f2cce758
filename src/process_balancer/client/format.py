"""How durations and slot indexes are written, the same in the terminal and the dashboard."""

from __future__ import annotations

from collections.abc import Sequence


def duration(seconds: float | None) -> str:
    """``0.4s``, ``12s``, ``5m03s``, ``2h07m``, ``3d04h``."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def indexes(values: Sequence[int]) -> str:
    """``0-3 7 9-10``: runs of consecutive indexes collapsed."""
    parts: list[str] = []
    start = previous = None
    for value in sorted(values):
        if previous is not None and value == previous + 1:
            previous = value
            continue
        if start is not None:
            parts.append(f"{start}-{previous}" if start != previous else f"{start}")
        start = previous = value
    if start is not None:
        parts.append(f"{start}-{previous}" if start != previous else f"{start}")
    return " ".join(parts)


def lag_text(seconds: float | None) -> str:
    """An event loop's lag: ``3 ms``, ``250 ms``, ``1.2s``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return duration(seconds)
