"""The status document (see :mod:`process_balancer.status`) shaped for the dashboard's templates.

Pure functions: every number the page shows is formatted here, so the templates only place
text, and Jinja's autoescaping covers everything a process wrote (identities, errors).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..client.autoscale import decision_text
from ..client.format import duration, indexes, lag_text
from .sampler import Sample

__all__ = ["dashboard"]


def rate(value: float | None) -> str:
    """``-``, ``4.2``, ``37``, ``12,480``."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.1f}"
    return f"{round(value):,}"


def count(value: int | None) -> str:
    return f"{value:,}" if value is not None else "-"


def _clock(at: float | None) -> str:
    if at is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _slots_per_job(slots: Mapping[str, Sequence[int]]) -> list[dict[str, Any]]:
    return [
        {"job": job_id, "indexes": indexes(idx), "count": len(idx)}
        for job_id, idx in sorted(slots.items())
        if idx
    ]


def _slot(slot: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "job": slot["job"],
        "index": slot["index"],
        "state": slot["state"] or "unknown",
        "iterations": count(slot["iterations"]),
        "records": count(slot["records"]),
        "iteration_age": duration(slot["iteration_age"]),
        "stuck": slot["stuck"],
        "restarts": slot["restarts"],
    }


def _event_loop(loop: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if loop is None:
        return None
    stall = loop["last_stall"]
    return {
        "lag": lag_text(loop["lag"]),
        "lagging": loop["lagging"],
        "stalls": loop["stalls"] or 0,
        "last_stall_slot": stall["slot"] if stall else None,
        "last_stall_where": stall["where"] if stall else None,
    }


def _process(proc: Mapping[str, Any], now: float) -> dict[str, Any]:
    busy = sum(len(v) for v in proc["running"].values())
    started = proc["started_at"]
    return {
        "identity": proc["identity"],
        "hostname": proc["hostname"] or "?",
        "pid": proc["pid"] if proc["pid"] is not None else "?",
        "state": proc["state"],
        "tags": ", ".join(proc.get("tags", ())),
        "started": _clock(started),
        "uptime": duration(now - started) if started is not None else "-",
        "heartbeat": f"{duration(proc['heartbeat_age'])} ago",
        "busy": busy,
        "capacity": proc["capacity"] if proc["capacity"] is not None else "?",
        "full": proc["capacity"] is not None and busy >= proc["capacity"],
        "running": _slots_per_job(proc["running"]),
        "slots": [_slot(s) for s in proc["slots"]],
        "event_loop": _event_loop(proc["event_loop"]),
        "can_quiet": proc["state"] == "active",
        "can_stop": proc["state"] != "stopping",
    }


def _job(job_id: str, job: Mapping[str, Any], rates: tuple[float, float] | None) -> dict[str, Any]:
    unplaced = indexes(job["unplaced"])
    reason = job.get("unplaced_reason")
    unplaced_why = reason["message"] if unplaced and reason else ""
    rule = []
    if job.get("require_tags"):
        rule.append(f"requires {', '.join(job['require_tags'])}")
    if job.get("prefer_tags"):
        rule.append(f"prefers {', '.join(job['prefer_tags'])}")
    if job.get("weight", 1) != 1:
        rule.append(f"weight {job['weight']:g}")
    healthy = job["running"] == job["scheduled"] and not job["unplaced"] and not job["stuck"]
    scaling = job.get("autoscale")
    autoscale = ""
    if scaling:
        autoscale = f"autoscale {scaling['min']}..{scaling['max']} · {scaling['state']}"
        if scaling["last"] is not None:
            autoscale += f" · {decision_text(scaling['last'])} by {scaling['last']['by']}"
    return {
        "id": job_id,
        "scheduled": job["scheduled"],
        "scheduled_from": job["scheduled_from"],
        "running": job["running"],
        "processes": job["processes"],
        "paused": job["paused"],
        "resume_to": job["resume_to"],
        "placement": [
            {"identity": who, "indexes": indexes(idx)} for who, idx in job["placement"].items()
        ],
        "unplaced": unplaced,
        "unplaced_why": unplaced_why,
        "rule": " · ".join(rule),
        "autoscale": autoscale,
        "stuck": " ".join(str(s["index"]) for s in job["stuck"]),
        "iterations_rate": rate(rates[0] if rates else None),
        "records_rate": rate(rates[1] if rates else None),
        "health": "ok" if healthy else "warn",
    }


def _errors(processes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for proc in processes:
        for slot in proc["slots"]:
            if slot["restarts"] or slot["last_error"] or slot["lock_losses"]:
                rows.append(
                    {
                        "job": slot["job"],
                        "index": slot["index"],
                        "identity": proc["identity"],
                        "state": slot["state"] or "unknown",
                        "restarts": slot["restarts"],
                        "lock_losses": count(slot["lock_losses"]),
                        "last_error": slot["last_error"] or "",
                    }
                )
    return sorted(rows, key=lambda r: (r["job"], r["index"], r["identity"]))


def dashboard(status: Mapping[str, Any], sample: Sample | None) -> dict[str, Any]:
    """Everything the live part of the page shows, from one status document and the latest
    throughput sample (None before the sampler has two readings)."""
    now = status["generated_at"]
    processes = status["processes"]
    rates = sample.rates if sample is not None else {}
    jobs = [_job(job_id, job, rates.get(job_id)) for job_id, job in status["jobs"].items()]
    states = [p["state"] for p in processes]
    capacity = sum(p["capacity"] or 0 for p in processes)
    totals = sample.totals() if sample is not None else None
    return {
        "processes": [_process(p, now) for p in processes],
        "jobs": jobs,
        "errors": _errors(processes),
        "summary": {
            "processes": len(processes),
            "active": states.count("active"),
            "quiet": states.count("quiet"),
            "stopping": states.count("stopping"),
            "running": sum(j["running"] for j in status["jobs"].values()),
            "scheduled": sum(j["scheduled"] for j in status["jobs"].values()),
            "capacity": capacity,
            "iterations_rate": rate(totals[0] if totals else None),
            "records_rate": rate(totals[1] if totals else None),
            "unplaced": sum(len(j["unplaced"]) for j in status["jobs"].values()),
            "stuck": sum(len(j["stuck"]) for j in status["jobs"].values()),
            "restarts": sum(s["restarts"] for p in processes for s in p["slots"]),
        },
        "assignment_current": status["state_version"] == status["assignment_version"],
        "problems": [
            {"where": p["where"], "detail": p["detail"]} for p in status.get("problems", [])
        ],
        "fixes": list(dict.fromkeys(p["fix"] for p in status.get("problems", []))),
        "generated": _clock(now),
        "stuck_after": duration(status["stuck_after"]),
    }
