"""Every error process-balancer raises on purpose derives from :class:`ProcessBalancerError`,
so embedding code can catch them all with one clause, or each kind by its own class."""

from __future__ import annotations


class ProcessBalancerError(Exception):
    """The root of process-balancer's own errors."""


class ConfigError(ProcessBalancerError):
    """Bad configuration.

    ``str(err)`` is a complete, human-readable message, one line per problem, each naming the
    file and the key path; ``err.problems`` holds the lines one by one.
    """

    def __init__(self, *problems: str) -> None:
        self.problems: tuple[str, ...] = problems
        super().__init__("\n".join(problems))


class BackendError(ProcessBalancerError):
    """The backend could not be reached or answered with something unusable."""


class CorruptStateError(BackendError):
    """Data found in the backend that this version cannot read (it is reported, never deleted).

    The message names where it was found (a Redis key, or ``schema.table[namespace/key]``) and
    what to do: ``process-balancer repair`` for the group's derived state, ``scale`` for a count.
    """


class PauseError(ProcessBalancerError, ValueError):
    """Pausing a job that is paused already, or resuming one that is not paused."""


class MetricsServerError(ProcessBalancerError):
    """The metrics server could not listen on the configured address."""
