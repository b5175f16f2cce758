"""process-balancer: long-running, iterative jobs balanced across processes and hosts.

The public names below load on first use, so ``import process_balancer`` (and the CLI's
``--version`` and ``--help``) does not import the runtime, the backends' client libraries or
the config loader until something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module defining it
_LAZY = {
    "AsyncBase": "job",
    "Base": "job",
    "BackendError": "errors",
    "ConfigError": "errors",
    "CorruptStateError": "errors",
    "MetricsServerError": "errors",
    "PauseError": "errors",
    "ProcessBalancerError": "errors",
    "Client": "client.api",
    "CommandResult": "client.api",
    "adjust_scheduled_workers": "client.api",
    "configure": "client.api",
    "running_workers": "client.api",
    "scheduled_workers": "client.api",
    "send_command": "client.api",
    "LockContext": "locks",
    "LockDriver": "locks",
}

__all__ = [
    "AsyncBase",
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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


if TYPE_CHECKING:
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
    from .job import AsyncBase, Base
    from .locks import LockContext, LockDriver
