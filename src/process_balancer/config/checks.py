"""Checks of single config values, and the collector of problem lines they feed.

Each check returns the value it accepts or raises :class:`Invalid` saying what is wrong; the
schema (``schema.py``) adds the file and the key path.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import defaults
from .loader import ConfigError, format_problem

NAME = re.compile(r"[A-Za-z0-9_.-]+")
#: A process tag: ``gpu``, ``eu-west``, ``zone=eu-west-1a``, ``team/search``.
TAG = re.compile(r"[A-Za-z0-9_.:=/-]{1,100}")
TAG_RULE = "a tag is 1 to 100 letters, digits and '_', '.', '-', ':', '=', '/'"
#: A stable identity: the member name every run of one logical process uses.
STABLE_IDENTITY = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
#: Most tags one list may hold: they travel with every heartbeat's traits.
MAX_TAGS = 100

#: A value that was reported as invalid: it still overrides, but skips the cross-field checks.
INVALID = object()


class Invalid(Exception):
    """One problem with one value; the caller knows the file and key path."""


class Problems:
    """Collects problem lines for one source (a file, or none for settings passed in code)."""

    def __init__(self, source: Path | None) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.lines.append(format_problem(self.source, path, message))

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError(*self.lines)


# -- value checks ------------------------------------------------------------------------------


def show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null (empty)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple, set)):
        return "a list"
    return repr(value)


def integer(value: object, minimum: int, wanted: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise Invalid(f"must be {wanted}, got {show(value)}")
    return value


def max_workers(value: object) -> int:
    limit = defaults.MAX_WORKERS_HARD_LIMIT
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise Invalid(f"must be an integer from 1 to {limit:,}, got {show(value)}")
    return value


def seconds(value: object, *, positive: bool) -> float:
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > 0 or (value == 0 and not positive))
    ):
        return float(value)
    wanted = "a positive" if positive else "a non-negative"
    raise Invalid(f"must be {wanted} number of seconds, got {show(value)}")


def tags(value: object) -> tuple[str, ...]:
    """A list of tags (``[gpu, eu-west]``), sorted and without repeats; null is none."""
    if value is None:
        return ()
    if isinstance(value, str):
        raise Invalid(
            f"must be a list of tags such as [gpu, eu-west], got {show(value)}; "
            f"write it as a list: [{value}]"
        )
    if not isinstance(value, (list, tuple)):
        raise Invalid(f"must be a list of tags such as [gpu, eu-west], got {show(value)}")
    if len(value) > MAX_TAGS:
        raise Invalid(f"holds {len(value)} tags; at most {MAX_TAGS} are allowed")
    for item in value:
        if not isinstance(item, str) or not TAG.fullmatch(item):
            raise Invalid(f"{show(item)} is not a tag: {TAG_RULE}")
    return tuple(sorted(set(value)))


def stable_identity(value: object) -> str | None:
    """A stable identity such as ``worker-0`` (null: none, each run is a new member)."""
    if value is None:
        return None
    if not isinstance(value, str) or not STABLE_IDENTITY.fullmatch(value):
        raise Invalid(
            "must be 1 to 200 letters, digits and '_', '.', '-', ':' (no '#', which separates "
            f"a run's instance), such as 'worker-0' or the pod's name, got {show(value)}"
        )
    return value


def weight(value: object) -> float:
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    ):
        return float(value)
    raise Invalid(
        "must be a positive number: what one slot of this job costs compared with a slot of "
        f"another job (default {defaults.WEIGHT:g}), got {show(value)}"
    )


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def backend(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"must be a backend URL such as {defaults.BACKEND_URL!r}, got {show(value)}")
    from ..backends import registry

    try:
        registry.check_url(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    return value


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, got {show(value)}")
    return value


def worker_kind(value: object) -> str:
    from ..runtime.workers import KINDS

    if not isinstance(value, str) or value not in KINDS:
        hint = " (the number of workers is `workers:`)" if isinstance(value, int) else ""
        raise Invalid(f"must be one of {', '.join(sorted(KINDS))}, got {show(value)}{hint}")
    return value


def iteration_context(value: object) -> tuple[str, ...]:
    """A list of ``module:function`` names (imported once the job classes are)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(
        isinstance(v, str) and v.strip() and not any(c.isspace() for c in v) for v in value
    ):
        raise Invalid(
            "must be a list of 'module:function' names of context-manager factories, "
            f"got {show(value)}"
        )
    return tuple(value)


def namespace(value: object) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise Invalid(
            f"must be a non-empty string of letters, digits, '_', '.' and '-', got {show(value)}"
        )
    return value


def port(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise Invalid(f"must be a TCP port from 1 to 65535, or null for none, got {show(value)}")
    return value


def host(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise Invalid(
            f"must be a host name or IP address to bind to, such as '0.0.0.0', got {show(value)}"
        )
    return value


SETTINGS_CHECKS: dict[str, Callable[[object], Any]] = {
    "backend": backend,
    "namespace": namespace,
    "max_threads": lambda v: integer(v, 1, "an integer >= 1"),
    "shutdown_timeout": lambda v: seconds(v, positive=False),
    "heartbeat_interval": lambda v: seconds(v, positive=True),
    "process_expiry": lambda v: seconds(v, positive=True),
    "metrics_port": port,
    "metrics_host": host,
    "max_workers": max_workers,
    "tags": tags,
    "stable_identity": stable_identity,
}


def unknown_key(key: object, allowed: Iterable[str], what: str) -> str:
    allowed = list(allowed)
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown {what}; {hint}allowed keys: {', '.join(allowed)}"


# -- reading the file --------------------------------------------------------------------------
