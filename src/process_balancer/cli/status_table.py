"""The status document (see :mod:`process_balancer.client.status`) as rich tables."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..client.autoscale import decision_text
from ..client.format import duration, indexes, lag_text

_STATE_STYLES = {"active": "green", "quiet": "yellow", "stopping": "red"}
_SLOT_STYLES = {"running": "green", "stopping": "yellow", "backoff": "red", "idle": "dim"}


def _text(value: object, style: str = "") -> Text:
    """A cell as literal text: identities like ``web:100:x`` and error messages must not be
    read as emoji codes or console markup."""
    return Text(str(value), style=style)


def _per_job(slots: Mapping[str, Sequence[int]]) -> Text:
    lines = [f"{job}: {indexes(idx)}" for job, idx in sorted(slots.items()) if idx]
    return _text("\n".join(lines) or "-")


def _started(started_at: float | None, now: float) -> str:
    if started_at is None:
        return "-"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started_at))
    return f"{stamp} ({duration(now - started_at)} ago)"


def _header(status: Mapping[str, Any]) -> Text:
    processes = status["processes"]
    active = sum(1 for p in processes if p["state"] == "active")
    current = status["state_version"] == status["assignment_version"]
    text = Text()
    text.append(f"namespace {status['namespace']}", style="bold")
    text.append(f" on {status['backend']}  ·  ")
    text.append(f"{len(processes)} process{'es' if len(processes) != 1 else ''} ")
    text.append(f"({active} active)  ·  {len(status['jobs'])} job(s)  ·  ")
    if status["assignment_version"] is None or status["state_version"] is None:
        text.append("assignment unreadable", style="bold red")
        return text
    text.append(f"assignment {status['assignment_version']}")
    text.append(
        " (current)" if current else " (being recomputed)", style=None if current else "yellow"
    )
    return text


def problems_table(status: Mapping[str, Any]) -> Table:
    """What the backend holds that cannot be read: where, what, and the fix (once each)."""
    table = Table(
        title="Unreadable data", title_justify="left", title_style="bold red", box=box.SIMPLE_HEAD
    )
    table.add_column("where", overflow="fold")
    table.add_column("found", overflow="fold")
    for problem in status["problems"]:
        table.add_row(_text(problem["where"], "red"), _text(problem["detail"]))
    fixes = dict.fromkeys(p["fix"] for p in status["problems"])
    table.caption = "\n".join(f"fix: {fix}" for fix in fixes)
    table.caption_justify = "left"
    return table


def _member(proc: Mapping[str, Any]) -> str:
    """The identity, with the run's instance when the process has a stable identity."""
    instance = proc.get("instance")
    return f"{proc['identity']}#{instance}" if instance else str(proc["identity"])


def processes_table(status: Mapping[str, Any]) -> Table:
    now = status["generated_at"]
    table = Table(title="Processes", title_justify="left", box=box.SIMPLE_HEAD)
    loops = any(p["event_loop"] for p in status["processes"])
    columns = [
        "identity",
        "host",
        "pid",
        "started",
        "heartbeat",
        "state",
        "busy",
        "running",
        "tags",
    ]
    # The loop lag comes last, and only when a process runs asyncio jobs: the columns
    # scripts read keep their places.
    for name in [*columns, "loop lag"] if loops else columns:
        table.add_column(name, no_wrap=name in ("identity", "started"))
    for proc in status["processes"]:
        busy = sum(len(v) for v in proc["running"].values())
        capacity = proc["capacity"] if proc["capacity"] is not None else "?"
        cells = [
            _text(_member(proc)),
            _text(proc["hostname"] or "?"),
            _text(proc["pid"] if proc["pid"] is not None else "?"),
            _text(_started(proc["started_at"], now)),
            _text(f"{duration(proc['heartbeat_age'])} ago"),
            _text(
                f"{proc['state']} (handed over)" if proc.get("handed_over") else proc["state"],
                _STATE_STYLES.get(proc["state"], ""),
            ),
            _text(f"{busy}/{capacity}"),
            _per_job(proc["running"]),
            _text(", ".join(proc.get("tags", ())) or "-"),
        ]
        if loops:
            cells.append(_loop_lag(proc["event_loop"]))
        table.add_row(*cells)
    return table


def _loop_lag(loop: Mapping[str, Any] | None) -> Text:
    """The asyncio event loop's lag, red with its last stall when it is over the threshold."""
    if loop is None:
        return _text("-")
    text = _text(lag_text(loop["lag"]), "bold red" if loop["lagging"] else "")
    stall = loop["last_stall"]
    if loop["stalls"]:
        where = f", last by {stall['slot']}" if stall and stall["slot"] else ""
        text.append(f"\n{loop['stalls']} stall(s){where}", style="red" if loop["lagging"] else "")
    return text


def slots_table(status: Mapping[str, Any]) -> Table:
    stuck_after = status["stuck_after"]
    table = Table(title="Slots", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("job")
    table.add_column("index", justify="right")
    table.add_column("process", no_wrap=True)
    table.add_column("state")
    table.add_column("iterations", justify="right")
    table.add_column("records", justify="right")
    table.add_column("iteration", justify="right")
    table.add_column("restarts", justify="right")
    table.add_column("last error", overflow="fold")
    rows = [(slot, proc["identity"]) for proc in status["processes"] for slot in proc["slots"]]
    for slot, identity in sorted(rows, key=lambda r: (r[0]["job"], r[0]["index"], r[1])):
        age = slot["iteration_age"]
        if slot["stuck"]:
            iteration = _text(f"{duration(age)} STUCK (> {duration(stuck_after)})", "bold red")
        else:
            iteration = _text(duration(age))
        state = slot["state"] or "?"
        table.add_row(
            _text(slot["job"]),
            _text(slot["index"]),
            _text(identity),
            _text(state, _SLOT_STYLES.get(state, "")),
            _text(_count(slot["iterations"])),
            _text(_count(slot["records"])),
            iteration,
            _text(slot["restarts"], "red" if slot["restarts"] else ""),
            _text(slot["last_error"] or "", "red"),
        )
    return table


def _count(value: int | None) -> str:
    return f"{value:,}" if value is not None else "-"


def rule_lines(job: Mapping[str, Any]) -> list[str]:
    """A job's placement rule as short lines: ``require gpu``, ``prefer eu-west``, ``weight 3``."""
    lines = []
    if job.get("require_tags"):
        lines.append(f"require {', '.join(job['require_tags'])}")
    if job.get("prefer_tags"):
        lines.append(f"prefer {', '.join(job['prefer_tags'])}")
    if job.get("weight", 1) != 1:
        lines.append(f"weight {job['weight']:g}")
    return lines


def jobs_table(status: Mapping[str, Any]) -> Table:
    table = Table(title="Jobs", title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("job", "scheduled", "running", "unplaced", "stuck", "paused", "placement"):
        justify = "right" if name in ("scheduled", "running") else "left"
        # The reason for unplaced slots can be long: wrap it instead of squeezing the rest.
        width = 60 if name == "unplaced" else None
        table.add_column(name, justify=justify, max_width=width)  # type: ignore[arg-type]
    for job_id, job in status["jobs"].items():
        scheduled, running = job["scheduled"], job["running"]
        running_style = "" if running == scheduled else "yellow"
        unplaced = indexes(job["unplaced"])
        reason = job.get("unplaced_reason")
        if unplaced and reason:
            unplaced += f": {reason['message']}"
        stuck = " ".join(str(s["index"]) for s in job["stuck"])
        placement = [f"{who} -> {indexes(idx)}" for who, idx in job["placement"].items()]
        table.add_row(
            _text("\n".join([job_id, *rule_lines(job)])),
            _text(f"{scheduled} ({job['scheduled_from']})"),
            _text(running, running_style),
            Text(unplaced or "-", style="red" if unplaced else "", overflow="fold"),
            _text(stuck or "-", "bold red" if stuck else ""),
            _text(f"yes (resume to {job['resume_to']})" if job["paused"] else "no"),
            _text("\n".join(placement) or "-"),
        )
    return table


def autoscale_table(status: Mapping[str, Any]) -> Table:
    """Each autoscaled job: its bounds, who evaluates it, its last decision and change."""
    now = status["generated_at"]
    table = Table(title="Autoscaling", title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("job", "bounds", "state", "evaluated by", "last decision", "last change"):
        table.add_column(name, overflow="fold", no_wrap=name == "evaluated by")
    for job_id, job in status["jobs"].items():
        scaling = job.get("autoscale")
        if not scaling:
            continue
        last, change = scaling["last"], scaling["last_change"]
        decided = decision_text(last)
        if last is not None:
            decided += f"\n{duration(now - last['at'])} ago by {last['by']}"
        changed = "-"
        if change is not None:
            changed = f"{change['from']} -> {change['to']}, {duration(now - change['at'])} ago"
        state = scaling["state"]
        table.add_row(
            _text(job_id),
            _text(
                f"{scaling['min']}..{scaling['max']}, every {duration(scaling['interval'])}, "
                f"cooldown {duration(scaling['cooldown'])}"
            ),
            _text(state, "yellow" if state != "evaluating" else "green"),
            _text(scaling["evaluator"] or "-"),
            _text(decided, "red" if last is not None and last["action"] == "error" else ""),
            _text(changed),
        )
    return table


def render(status: Mapping[str, Any]) -> RenderableType:
    """Header, unreadable data if any, then the processes, slots, jobs and autoscaling tables
    (those that have rows)."""
    parts: list[RenderableType] = [_header(status)]
    if status["problems"]:
        parts.append(problems_table(status))
    if status["processes"]:
        parts.append(processes_table(status))
    else:
        parts.append(_text(f"\nno live processes in namespace {status['namespace']}\n"))
    if any(p["slots"] for p in status["processes"]):
        parts.append(slots_table(status))
    if status["jobs"]:
        parts.append(jobs_table(status))
    if any(job.get("autoscale") for job in status["jobs"].values()):
        parts.append(autoscale_table(status))
    return Group(*parts)
