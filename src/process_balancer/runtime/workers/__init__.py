"""Worker kinds: how a slot's iterations run. Each kind is one module here plus one line in
:data:`KINDS`; a job picks its kind with its ``worker:`` option (default ``thread``)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Worker

#: kind name -> "module:Class" (imported only when a job uses it).
KINDS = {
    "thread": "process_balancer.runtime.workers.thread:ThreadWorker",
}


def worker_class(kind: str) -> type[Worker]:
    """The Worker subclass of ``kind``; ValueError naming the known kinds for any other."""
    try:
        target = KINDS[kind]
    except KeyError:
        raise ValueError(
            f"unknown worker kind {kind!r}; use one of {', '.join(sorted(KINDS))}"
        ) from None
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    found: type[Worker] = getattr(module, class_name)
    return found
