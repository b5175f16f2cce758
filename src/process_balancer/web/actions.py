"""What the dashboard's buttons do, once :mod:`.security` has let the request through.

Each action answers an HTTP status and one line for the operator, worded as the CLI words
the same operation (``q: 5 workers (was 2)``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from ..client.api import Client
from ..config.defaults import MAX_WORKERS_HARD_LIMIT

__all__ = ["ActionError", "Actions"]


class ActionError(Exception):
    """The action cannot be done as asked; nothing was changed."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


Result = tuple[int, str]


class Actions:
    """The operations behind ``POST actions/<name>``; blocking, run in a worker thread."""

    NAMES = ("scale", "pause", "resume", "quiet", "stop", "check")

    def __init__(self, client: Client, *, command_wait: float = 5.0) -> None:
        self.client = client
        self.command_wait = command_wait
        self._handlers: dict[str, Callable[[Mapping[str, str]], Result]] = {
            "scale": self.scale,
            "pause": self.pause,
            "resume": self.resume,
            "quiet": lambda form: self.command("quiet", form),
            "stop": lambda form: self.command("stop", form),
            "check": lambda form: (200, "token accepted: actions are unlocked"),
        }

    def knows(self, name: str) -> bool:
        return name in self._handlers

    def run(self, name: str, form: Mapping[str, str]) -> Result:
        return self._handlers[name](form)

    def _job(self, form: Mapping[str, str]) -> str:
        job_id = form.get("job", "")
        if not job_id:
            raise ActionError(400, "missing field 'job'")
        if job_id not in self.client.known_jobs():
            raise ActionError(
                404, f"unknown job {job_id!r}: neither the config nor any live process has it"
            )
        return job_id

    def scale(self, form: Mapping[str, str]) -> Result:
        job_id = self._job(form)
        raw = form.get("count", "").strip()
        if not re.fullmatch(r"-?[0-9]+", raw):
            raise ActionError(400, f"N must be a whole number of workers, got {raw[:40]!r}")
        if raw.startswith("-"):
            raise ActionError(400, f"N must be 0 or more, got {raw}; nothing was changed")
        maximum = self.client.max_workers(job_id)
        # A number too long to be a count is refused as typed, without converting it.
        if len(raw) > len(str(MAX_WORKERS_HARD_LIMIT)) or int(raw) > maximum:
            raise ActionError(
                400,
                f"N must be at most {maximum:,}, {self._ceiling(job_id)}, got {raw[:40]}; "
                "nothing was changed",
            )
        before = self.client.scheduled_workers(job_id)
        try:
            after = self.client.adjust_scheduled_workers(job_id, to=int(raw))
        except ValueError as exc:
            raise ActionError(400, str(exc)) from None
        return 200, f"{job_id}: {after} workers (was {before})"

    def _ceiling(self, job_id: str) -> str:
        if job_id in self.client.settings.jobs:
            return f"the max_workers of job {job_id!r} in the dashboard's config"
        return "the dashboard's max_workers"

    def pause(self, form: Mapping[str, str]) -> Result:
        job_id = self._job(form)
        try:
            remembered = self.client.pause(job_id)
        except ValueError as exc:  # PauseError, or a count above the ceiling
            raise ActionError(409, str(exc)) from None
        return 200, f"{job_id}: paused, 0 workers (resume restores {remembered})"

    def resume(self, form: Mapping[str, str]) -> Result:
        job_id = self._job(form)
        try:
            count = self.client.resume(job_id)
        except ValueError as exc:  # PauseError, or a count above the ceiling
            raise ActionError(409, str(exc)) from None
        return 200, f"{job_id}: resumed, {count} workers"

    def command(self, command: str, form: Mapping[str, str]) -> Result:
        identity = form.get("identity", "")
        if not identity:
            raise ActionError(400, "missing field 'identity'")
        (result,) = self.client.send_commands([identity], command, wait=self.command_wait)
        if result.outcome == "acknowledged":
            return 200, f"{identity}: {command} acknowledged in {result.after:.2f}s"
        if result.outcome == "not_acknowledged":
            return 202, (
                f"{identity}: {command} sent, not acknowledged within {self.command_wait:g}s; "
                "it stays queued for the process for 10 minutes"
            )
        raise ActionError(404, f"{identity} is not a live process; nothing was sent")
