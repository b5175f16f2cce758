"""The config file's schema: validated settings and job entries, and the jobs' classes.

Every problem is reported as one line ``<file>: <dotted.key.path>: <what is wrong>`` and all the
problems of a file are raised together in one :class:`ConfigError`, so an operator fixes a config
in one pass and nothing starts from a half-valid one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import checks, defaults
from .job_entry import JobConfig, check_job, placement_traits
from .loader import ConfigError, load_factory, load_job_class, read_config_file

if TYPE_CHECKING:
    from ..job import Base

__all__ = [
    "ConfigError",
    "JobConfig",
    "Settings",
    "find_config_file",
    "load_config",
    "resolve_job_class",
    "resolve_job_classes",
    "settings_from",
]

logger = logging.getLogger(__name__)

#: URL schemes a ``backend`` may use.

TOP_LEVEL_KEYS = ("global", "environments", "jobs")
SETTINGS_KEYS = (
    "backend",
    "namespace",
    "max_threads",
    "shutdown_timeout",
    "heartbeat_interval",
    "process_expiry",
    "metrics_port",
    "metrics_host",
    "max_workers",
    "tags",
    "stable_identity",
)


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to run, validated."""

    backend: str
    namespace: str
    max_threads: int
    shutdown_timeout: float
    heartbeat_interval: float
    process_expiry: float
    environment: str
    config_file: Path | None
    jobs: dict[str, JobConfig]
    #: Port of the ``/metrics``, ``/healthz`` and ``/readyz`` server; None serves nothing.
    metrics_port: int | None = None
    metrics_host: str = defaults.METRICS_HOST
    #: Most workers a job without a ``max_workers`` of its own may be scaled to.
    max_workers: int = defaults.MAX_WORKERS
    #: This process's tags (``tags:`` and ``run --tag``), sorted; jobs may require or prefer
    #: some of them (``placement:``).
    tags: tuple[str, ...] = ()
    #: The member identity of every run of this logical process (``stable_identity:`` and
    #: ``run --stable-identity``); None: each run joins as a new member.
    stable_identity: str | None = None

    def max_workers_of(self, job_id: str) -> int:
        """The ceiling of ``job_id``'s count: its own ``max_workers`` when this config has the
        job, else the global one."""
        job = self.jobs.get(job_id)
        return job.max_workers if job is not None else self.max_workers

    def placement_traits(self) -> dict[str, Any]:
        """What a process publishes for placement: its tags, and the rules of its jobs that
        set one (see ``balancing/placement.py``)."""
        return {"tags": list(self.tags), "placement": placement_traits(self.jobs)}


def find_config_file(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Return the config file to read: ``path`` if given (it must exist), else the first of
    :data:`defaults.CONFIG_PATHS` that exists in the working directory, else None."""
    if path is not None:
        given = Path(path)
        if not given.exists():
            raise ConfigError(f"{given}: no such file")
        if given.is_dir():
            raise ConfigError(f"{given}: is a directory, not a config file")
        return given
    for candidate in defaults.CONFIG_PATHS:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


# -- building settings -------------------------------------------------------------------------

_INVALID = checks.INVALID


def _check_settings(
    problems: checks.Problems, prefix: str, raw: object, found: dict[str, tuple[Any, str]]
) -> None:
    """Validate one settings mapping and merge its values over ``found`` (key -> value, path)."""
    if raw is None:
        return
    if not isinstance(raw, Mapping):
        problems.add(prefix.rstrip("."), f"must be a mapping of settings, got {checks.show(raw)}")
        return
    for key, value in raw.items():
        path = f"{prefix}{key}"
        check = checks.SETTINGS_CHECKS.get(key) if isinstance(key, str) else None
        if check is None:
            problems.add(path, checks.unknown_key(key, SETTINGS_KEYS, "setting"))
            continue
        try:
            found[key] = (check(value), path)
        except checks.Invalid as exc:
            problems.add(path, str(exc))
            found[key] = (_INVALID, path)


def _build(
    problems: checks.Problems,
    found: dict[str, tuple[Any, str]],
    environ: Mapping[str, str],
    environment: str,
    jobs: dict[str, JobConfig],
) -> Settings:
    def get(key: str, default: Any) -> Any:
        value = found.get(key, (default, ""))[0]
        return default if value is _INVALID else value

    backend = get("backend", None)
    if "backend" not in found:
        backend = defaults.BACKEND_URL
        if environ.get("REDIS_URL"):
            try:
                backend = checks.backend(environ["REDIS_URL"])
            except checks.Invalid as exc:
                problems.add("backend (from REDIS_URL)", str(exc))
    interval = get("heartbeat_interval", defaults.HEARTBEAT_INTERVAL)
    expiry = get("process_expiry", defaults.PROCESS_EXPIRY)
    keys = ("process_expiry", "heartbeat_interval")
    if all(found.get(k, (None,))[0] is not _INVALID for k in keys) and expiry < 2 * interval:
        origin = {k: found[k][1] if k in found else "default" for k in keys}
        problems.add(
            next((found[k][1] for k in keys if k in found), "process_expiry"),
            f"process_expiry ({expiry:g} s, {origin['process_expiry']}) must be at least "
            f"2 x heartbeat_interval ({interval:g} s, {origin['heartbeat_interval']}) = "
            f"{2 * interval:g} s, so one late heartbeat does not count a process as dead; "
            "raise process_expiry or lower heartbeat_interval",
        )
    problems.raise_if_any()
    return Settings(
        backend=backend,
        namespace=get("namespace", defaults.NAMESPACE),
        max_threads=get("max_threads", defaults.MAX_THREADS),
        shutdown_timeout=float(get("shutdown_timeout", defaults.SHUTDOWN_TIMEOUT)),
        heartbeat_interval=float(interval),
        process_expiry=float(expiry),
        environment=environment,
        config_file=problems.source,
        jobs=jobs,
        metrics_port=get("metrics_port", None),
        metrics_host=get("metrics_host", defaults.METRICS_HOST),
        max_workers=get("max_workers", defaults.MAX_WORKERS),
        tags=get("tags", ()),
        stable_identity=get("stable_identity", None),
    )


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read and validate the config file (``path``, else the default locations).

    The environment is ``env``, else ``APP_ENV``, else :data:`defaults.ENVIRONMENT`; its
    ``environments.<env>`` mapping is merged over ``global``. Every environment is validated, so
    a typo in ``production`` is caught on a developer's machine. Without any file, the settings
    come from the defaults and there are no jobs.
    """
    environ = os.environ if environ is None else environ
    environment = env or environ.get("APP_ENV") or defaults.ENVIRONMENT
    source = find_config_file(path)
    problems = checks.Problems(source)
    found: dict[str, tuple[Any, str]] = {}
    if source is None:
        return _build(problems, found, environ, environment, {})

    data = read_config_file(source, environ)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        allowed = ", ".join(TOP_LEVEL_KEYS)
        problems.add(
            "(top level)", f"must be a mapping with the keys {allowed}, got {checks.show(data)}"
        )
        data = {}
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            problems.add(str(key), checks.unknown_key(key, TOP_LEVEL_KEYS, "top-level key"))

    _check_settings(problems, "global.", data.get("global"), found)
    environments = data.get("environments")
    if isinstance(environments, Mapping):
        for name, section in environments.items():
            merged = found if name == environment else {}
            _check_settings(problems, f"environments.{name}.", section, merged)
    elif environments is not None:
        problems.add(
            "environments",
            f"must be a mapping of environment names to settings, got {checks.show(environments)}",
        )

    jobs: dict[str, JobConfig] = {}
    global_max = found.get("max_workers", (defaults.MAX_WORKERS, "the default"))
    raw_jobs = data.get("jobs")
    if isinstance(raw_jobs, Mapping):
        for job_id, entry in raw_jobs.items():
            job = check_job(problems, job_id, entry, global_max)
            if job is not None:
                jobs[job.job_id] = job
    elif raw_jobs is not None:
        problems.add(
            "jobs", f"must be a mapping of job ids to job entries, got {checks.show(raw_jobs)}"
        )
    return _build(problems, found, environ, environment, jobs)


def settings_from(
    *,
    backend: str | None = None,
    namespace: str | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Settings without a config file, validated like a file's ``global`` section.

    Arguments left at None take their defaults (``backend`` falls back to ``REDIS_URL``, then
    to :data:`defaults.BACKEND_URL`, a SQLite file in the working directory).
    """
    environ = os.environ if environ is None else environ
    for key in overrides:
        if key not in SETTINGS_KEYS:
            raise TypeError(f"settings_from() got an unexpected keyword argument {key!r}")
    given = {"backend": backend, "namespace": namespace, **overrides}
    problems = checks.Problems(None)
    found: dict[str, tuple[Any, str]] = {}
    _check_settings(problems, "", {k: v for k, v in given.items() if v is not None}, found)
    environment = environ.get("APP_ENV") or defaults.ENVIRONMENT
    return _build(problems, found, environ, environment, {})


# -- job classes -------------------------------------------------------------------------------


def resolve_job_class(job: JobConfig, config_file: Path | None) -> type[Base]:
    """Import the class a job names and its ``iteration_context`` factories, and check that
    its ``worker`` kind can run it; call it after the ``-r`` modules are loaded."""
    from ..runtime.workers import kind_for

    problems = checks.Problems(config_file)
    where = f"jobs.{job.job_id}"
    found: type[Base] | None = None
    try:
        found = load_job_class(job.class_path)
    except ConfigError as exc:
        problems.add(f"{where}.class", str(exc))
    for i, name in enumerate(job.iteration_context):
        try:
            load_factory(name)
        except ConfigError as exc:
            problems.add(f"{where}.iteration_context[{i}]", str(exc))
    if found is not None:
        try:
            kind_for(found, job.worker)
        except ValueError as exc:
            problems.add(f"{where}.worker", str(exc))
        if job.autoscale is not None and not callable(getattr(found, "desired_workers", None)):
            problems.add(
                f"{where}.autoscale",
                f"class {found.__module__}.{found.__qualname__} has no desired_workers() "
                "method; define `def desired_workers(self) -> int` on it (the count the "
                "autoscaler aims for, e.g. from a queue's depth) or remove autoscale",
            )
    problems.raise_if_any()
    assert found is not None
    return found


def resolve_job_classes(settings: Settings) -> dict[str, type[Base]]:
    """Import every job's class; all failures are raised together in one :class:`ConfigError`."""
    classes: dict[str, type[Base]] = {}
    problems: list[str] = []
    for job_id, job in settings.jobs.items():
        try:
            classes[job_id] = resolve_job_class(job, settings.config_file)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(*problems)
    return classes
