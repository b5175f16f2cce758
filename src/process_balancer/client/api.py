"""Steering a running group from scripts, consoles and web apps."""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..backends import Backend, MemberState, open_backend
from ..backends.base import COMMANDS
from ..balancing.rebalance import config_counts, rebalance
from ..config.defaults import MAX_WORKERS_HARD_LIMIT
from ..config.schema import Settings, load_config, settings_from
from ..errors import PauseError as PauseError
from .status import DEFAULT_STUCK_AFTER, read_status


@dataclass(frozen=True)
class CommandResult:
    """What became of a remote command sent to one process.

    ``outcome`` is ``"acknowledged"`` (the process handled it; ``after`` is the seconds it
    took), ``"not_acknowledged"`` (queued, but no acknowledgement within the wait) or
    ``"not_live"`` (no live process has that identity; nothing was queued).
    """

    identity: str
    outcome: Literal["acknowledged", "not_acknowledged", "not_live"]
    after: float | None = None


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value


class Client:
    """A connection to one group: worker counts, processes, remote commands."""

    def __init__(self, settings: Settings, backend: Backend | None = None) -> None:
        self.settings = settings
        self.backend = (
            backend if backend is not None else open_backend(settings.backend, settings.namespace)
        )

    def _check_job(self, job_id: object) -> str:
        if not isinstance(job_id, str) or not job_id:
            raise ValueError(f"job_id must be a non-empty string, got {job_id!r}")
        return job_id

    def config_workers(self, job_id: str) -> int:
        """The job's ``workers`` from the config: as the group's oldest live process that runs
        the job advertises it (what the group uses), else from this client's config file,
        else 1."""
        advertised = config_counts(self.backend.snapshot().members)
        if job_id in advertised:
            return advertised[job_id]
        job = self.settings.jobs.get(job_id)
        return job.workers if job is not None and job.workers is not None else 1

    def adjust_scheduled_workers(
        self, job_id: str, *, to: int | None = None, by: int | None = None
    ) -> int:
        """Set (``to``) or change (``by``) the job's worker count at runtime; returns it.

        Exactly one of ``to`` and ``by``; a count that is not an integer from 0 to the job's
        :meth:`max_workers`, or a change that would leave that range, raises ValueError and
        writes nothing. Every process picks the new count up at once.
        """
        job_id = self._check_job(job_id)
        if (to is None) == (by is None):
            raise ValueError("give exactly one of to= (the new count) or by= (a change)")
        maximum = self.max_workers(job_id)
        if to is not None and _check_int("to", to) < 0:
            raise ValueError(f"to must be 0 or more, got {to}; nothing was changed")
        if to is not None and to > maximum:
            raise ValueError(
                f"to must be at most {maximum:,} ({self._ceiling_source(job_id)}), got {to}; "
                "nothing was changed"
            )
        if by is not None and abs(_check_int("by", by)) > MAX_WORKERS_HARD_LIMIT:
            raise ValueError(
                f"by must be from -{MAX_WORKERS_HARD_LIMIT:,} to {MAX_WORKERS_HARD_LIMIT:,}, "
                f"got {by}; nothing was changed"
            )
        count = self.backend.set_count(
            job_id, to=to, by=by, default=self.config_workers(job_id), maximum=maximum
        )
        rebalance(self.backend)
        return count

    def max_workers(self, job_id: str) -> int:
        """The most workers ``job_id`` may be scaled to: the job's ``max_workers`` in this
        client's config, else the global one (default :data:`defaults.MAX_WORKERS`)."""
        return self.settings.max_workers_of(job_id)

    def _ceiling_source(self, job_id: str) -> str:
        """Where :meth:`max_workers` comes from, for messages."""
        if job_id in self.settings.jobs:
            return f"the max_workers of job {job_id!r}"
        return "max_workers" if self.settings.config_file is not None else "the default max_workers"

    def scheduled_workers(self, job_id: str) -> int:
        """The count set at runtime, else the job's config ``workers``, else 1."""
        job_id = self._check_job(job_id)
        count = self.backend.get_count(job_id)
        return count if count is not None else self.config_workers(job_id)

    def processes(self) -> list[MemberState]:
        """Live processes of the group, oldest first."""
        members = self.backend.snapshot().members
        return sorted(members, key=lambda m: (m.traits.get("started_at") or 0, m.identity))

    def unplaced(self) -> dict[str, list[int]]:
        """Slots per job that no live, non-quiet process has room for."""
        return self.backend.snapshot().unplaced

    def running_workers(self, job_id: str) -> int:
        """Workers of ``job_id`` running now, summed over live processes."""
        job_id = self._check_job(job_id)
        total = 0
        for member in self.backend.snapshot().members:
            running = member.info.get("running")
            if isinstance(running, Mapping):
                indexes = running.get(job_id)
                if isinstance(indexes, list):
                    total += len(indexes)
        return total

    def send_command(self, identity: str, command: str) -> bool:
        """Ask process ``identity`` to ``quiet``, ``stop`` or ``dump`` its threads.

        Returns False when no live process has that identity.
        """
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}; use one of {', '.join(COMMANDS)}")
        return self.backend.send_command(identity, {"command": command})

    def pause(self, job_id: str) -> int:
        """Set the job's count to 0, remembering the current one for :meth:`resume`.

        Returns the remembered count; raises PauseError if the job is paused already.
        """
        job_id = self._check_job(job_id)
        remembered = self.backend.pause(
            job_id, default=self.config_workers(job_id), maximum=self.max_workers(job_id)
        )
        if remembered is None:
            resume_to = self.backend.paused_counts().get(job_id)
            raise PauseError(
                f"job {job_id!r} is paused already (it resumes with {resume_to} workers); "
                "nothing was changed"
            )
        rebalance(self.backend)
        return remembered

    def resume(self, job_id: str) -> int:
        """Give a paused job back the count it had before :meth:`pause`; returns it.

        Raises PauseError if the job is not paused (setting its count also ends a pause).
        """
        job_id = self._check_job(job_id)
        count = self.backend.resume(job_id, maximum=self.max_workers(job_id))
        if count is None:
            raise PauseError(
                f"job {job_id!r} is not paused, so there is no count to resume to; "
                "use scale to set one"
            )
        rebalance(self.backend)
        return count

    def known_jobs(self) -> set[str]:
        """Job ids of the config file and of every job a live process can run."""
        jobs = set(self.settings.jobs)
        for member in self.backend.snapshot().members:
            advertised = member.traits.get("jobs")
            if isinstance(advertised, list):
                jobs.update(j for j in advertised if isinstance(j, str))
        return jobs

    def status(self, *, stuck_after: float = DEFAULT_STUCK_AFTER) -> dict[str, Any]:
        """The group's status document (see :mod:`process_balancer.status`); data the backend
        holds that cannot be read is listed under ``"problems"``, the rest is still shown."""
        return read_status(
            self.backend,
            stuck_after=stuck_after,
            config_workers={job_id: job.workers for job_id, job in self.settings.jobs.items()},
            namespace=self.settings.namespace,
        )

    def send_commands(
        self, identities: Iterable[str], command: str, *, wait: float = 5.0
    ) -> list[CommandResult]:
        """Send ``command`` to every process in ``identities`` and wait up to ``wait``
        seconds for each to acknowledge it; one result per identity, in the given order."""
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}; use one of {', '.join(COMMANDS)}")
        command_id = secrets.token_hex(8)
        payload = {"command": command, "id": command_id, "sent_at": time.time()}
        started = time.monotonic()
        targets = list(dict.fromkeys(identities))
        queued = [i for i in targets if self.backend.send_command(i, payload)]
        acked: dict[str, float] = {}
        while queued:
            done = self.backend.command_acks(command_id)
            now = time.monotonic()
            for identity in done:
                acked.setdefault(identity, round(now - started, 3))
            if all(i in acked for i in queued) or now - started >= wait:
                break
            time.sleep(min(0.05, max(0.0, wait - (now - started))))
        results = []
        for identity in targets:
            if identity in acked:
                results.append(CommandResult(identity, "acknowledged", acked[identity]))
            elif identity in queued:
                results.append(CommandResult(identity, "not_acknowledged"))
            else:
                results.append(CommandResult(identity, "not_live"))
        return results

    def close(self) -> None:
        self.backend.close()


_lock = threading.Lock()
_client: Client | None = None


def configure(
    config_file: str | os.PathLike[str] | None = None,
    *,
    env: str | None = None,
    backend: str | None = None,
    namespace: str | None = None,
) -> Client:
    """Point the module-level functions at a group.

    From a config file as ``process-balancer run -c`` reads it, or from a backend URL and
    namespace; with neither, from ``REDIS_URL``, else the runner's default SQLite file
    (``./process_balancer.sqlite3``), and the default namespace.
    """
    global _client
    if config_file is not None:
        settings = load_config(config_file, env=env)
        if backend is not None or namespace is not None:
            overrides: dict[str, Any] = {}
            if backend is not None:
                overrides["backend"] = backend
            if namespace is not None:
                overrides["namespace"] = namespace
            settings = _replace(settings, overrides)
    else:
        settings = settings_from(backend=backend, namespace=namespace)
    client = Client(settings)
    with _lock:
        previous, _client = _client, client
    if previous is not None:
        previous.close()
    return client


def _replace(settings: Settings, overrides: dict[str, Any]) -> Settings:
    fresh = settings_from(
        backend=overrides.get("backend", settings.backend),
        namespace=overrides.get("namespace", settings.namespace),
    )
    from dataclasses import replace

    return replace(settings, backend=fresh.backend, namespace=fresh.namespace)


def client() -> Client:
    """The module-level client, configured from the environment on first use."""
    global _client
    with _lock:
        if _client is None:
            _client = Client(settings_from())
        return _client


def adjust_scheduled_workers(job_id: str, *, to: int | None = None, by: int | None = None) -> int:
    """Set or change a job's worker count at runtime (see Client.adjust_scheduled_workers)."""
    return client().adjust_scheduled_workers(job_id, to=to, by=by)


def scheduled_workers(job_id: str) -> int:
    """The job's worker count: set at runtime, else from the config, else 1."""
    return client().scheduled_workers(job_id)


def running_workers(job_id: str) -> int:
    """Workers of the job running now over all live processes."""
    return client().running_workers(job_id)


def send_command(identity: str, command: str) -> bool:
    """Ask a process on any host to ``quiet``, ``stop`` or ``dump``; False if it is not live."""
    return client().send_command(identity, command)
