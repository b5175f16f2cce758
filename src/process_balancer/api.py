"""Steering a running group from scripts, consoles and web apps."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from .backends import Backend, MemberState, open_backend
from .balancer import rebalance
from .config import Settings, load_config, settings_from
from .manager import COMMANDS


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
        """The job's ``workers`` from the config, else 1."""
        job = self.settings.jobs.get(job_id)
        return job.workers if job is not None and job.workers is not None else 1

    def adjust_scheduled_workers(
        self, job_id: str, *, to: int | None = None, by: int | None = None
    ) -> int:
        """Set (``to``) or change (``by``) the job's worker count at runtime; returns it.

        Exactly one of ``to`` and ``by``; a negative or non-integer count, or a change that
        would go below 0, raises ValueError and writes nothing. Every process picks the new
        count up at once.
        """
        job_id = self._check_job(job_id)
        if (to is None) == (by is None):
            raise ValueError("give exactly one of to= (the new count) or by= (a change)")
        if to is not None and _check_int("to", to) < 0:
            raise ValueError(f"to must be 0 or more, got {to}; nothing was changed")
        if by is not None:
            _check_int("by", by)
        count = self.backend.set_count(job_id, to=to, by=by, default=self.config_workers(job_id))
        rebalance(self.backend)
        return count

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
    namespace; with neither, from ``REDIS_URL`` and the default namespace.
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
