"""What the dashboard's buttons do, once :mod:`.security` has let the request through.

Each action answers an HTTP status and one line for the operator, worded as the CLI words
the same operation (``q: 5 workers (was 2)``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..api import Client, PauseError

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
        try:
            to = int(raw)
        except ValueError:
            raise ActionError(400, f"N must be a whole number of workers, got {raw!r}") from None
        if to < 0:
            raise ActionError(400, f"N must be 0 or more, got {to}; nothing was changed")
        before = self.client.scheduled_workers(job_id)
        after = self.client.adjust_scheduled_workers(job_id, to=to)
        return 200, f"{job_id}: {after} workers (was {before})"

    def pause(self, form: Mapping[str, str]) -> Result:
        job_id = self._job(form)
        try:
            remembered = self.client.pause(job_id)
        except PauseError as exc:
            raise ActionError(409, str(exc)) from None
        return 200, f"{job_id}: paused, 0 workers (resume restores {remembered})"

    def resume(self, form: Mapping[str, str]) -> Result:
        job_id = self._job(form)
        try:
            count = self.client.resume(job_id)
        except PauseError as exc:
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
