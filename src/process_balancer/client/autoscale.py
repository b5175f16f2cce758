"""A job's autoscaling in the status document, from what its processes publish.

Every process that autoscales a job publishes in its heartbeat info the job's bounds,
whether it is the one evaluating it now, and its last decision and change (see
``runtime/autoscale.py``). Values a process wrote are untrusted: the wrong type reads as
None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..backends.base import MemberState

__all__ = ["autoscale_status", "decision_text"]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _decision(value: object, by: str) -> dict[str, Any] | None:
    if not isinstance(value, Mapping) or _number(value.get("at")) is None:
        return None
    return {
        "at": _number(value.get("at")),
        "by": by,
        "action": _text(value.get("action")),
        "desired": _integer(value.get("desired")),
        "target": _integer(value.get("target")),
        "count": _integer(value.get("count")),
        "error": _text(value.get("error")),
    }


def _change(value: object, by: str) -> dict[str, Any] | None:
    if not isinstance(value, Mapping) or _number(value.get("at")) is None:
        return None
    return {
        "at": _number(value.get("at")),
        "by": by,
        "from": _integer(value.get("from")),
        "to": _integer(value.get("to")),
    }


def _latest(items: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    found = [item for item in items if item is not None]
    return max(found, key=lambda item: item["at"]) if found else None


def autoscale_status(
    job_id: str, members: Sequence[MemberState], *, paused: bool
) -> dict[str, Any] | None:
    """The job's autoscaling: bounds, the evaluating process, the last decision and change
    (each with the process that made it); None when no live process autoscales the job.

    ``state`` is ``paused`` (the operator's pause wins: nothing is changed until resume),
    ``evaluating`` (a process holds the job's autoscale lock) or ``waiting`` (none does yet).
    """
    entries = []
    for member in members:  # oldest first
        published = member.info.get("autoscale")
        entry = published.get(job_id) if isinstance(published, Mapping) else None
        if isinstance(entry, Mapping):
            entries.append((member.identity, entry))
    if not entries:
        return None
    evaluators = [identity for identity, entry in entries if entry.get("evaluating") is True]
    evaluator = evaluators[0] if evaluators else None
    bounds = next((e for identity, e in entries if identity == evaluator), entries[0][1])
    decisions = [_decision(entry.get("last"), identity) for identity, entry in entries]
    own = [d for d in decisions if d is not None and d["by"] == evaluator]
    return {
        "state": "paused" if paused else "evaluating" if evaluator else "waiting",
        "min": _integer(bounds.get("min")),
        "max": _integer(bounds.get("max")),
        "interval": _number(bounds.get("interval")),
        "cooldown": _number(bounds.get("cooldown")),
        "evaluator": evaluator,
        "last": own[0] if own else _latest(decisions),
        "last_change": _latest([_change(e.get("last_change"), i) for i, e in entries]),
    }


def decision_text(decision: Mapping[str, Any] | None) -> str:
    """A decision as the status table and the dashboard show it."""
    if decision is None:
        return "-"
    action, desired = decision["action"], decision["desired"]
    if action == "scaled":
        return f"set {decision['count']} (desired {desired})"
    if action == "steady":
        return f"kept {decision['count']} (desired {desired})"
    if action == "cooldown":
        return (
            f"kept {decision['count']} (desired {desired}): lowering to {decision['target']} "
            "waits for the cooldown"
        )
    if action == "paused":
        return f"nothing changed: the job is paused (desired {desired})"
    if action == "error":
        return f"skipped: {decision['error']}"
    return str(action)
