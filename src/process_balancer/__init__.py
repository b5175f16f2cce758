"""process-balancer: long-running, iterative jobs balanced across processes and hosts."""

from __future__ import annotations

from .client.api import (
    Client,
    CommandResult,
    adjust_scheduled_workers,
    configure,
    running_workers,
    scheduled_workers,
    send_command,
)
from .errors import (
    BackendError,
    ConfigError,
    CorruptStateError,
    MetricsServerError,
    PauseError,
    ProcessBalancerError,
)
from .job import Base
from .locks import LockContext, LockDriver

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "Base",
    "Client",
    "CommandResult",
    "ConfigError",
    "CorruptStateError",
    "LockContext",
    "LockDriver",
    "MetricsServerError",
    "PauseError",
    "ProcessBalancerError",
    "__version__",
    "adjust_scheduled_workers",
    "configure",
    "running_workers",
    "scheduled_workers",
    "send_command",
]
