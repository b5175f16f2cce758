"""Worker kinds: how a slot's iterations run. Each kind is one module here plus one line in
:data:`KINDS`; a job picks its kind with its ``worker:`` option, or by its class (``asyncio``
for a :class:`~process_balancer.AsyncBase` job, else ``thread``)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ...config import defaults
from ...job import AsyncBase

if TYPE_CHECKING:
    from ...job import Base
    from .base import Worker

#: kind name -> "module:Class" (imported only when a job uses it).
KINDS = {
    "asyncio": "process_balancer.runtime.workers.asyncio_worker:AsyncWorker",
    "process": "process_balancer.runtime.workers.process:ProcessWorker",
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


def kind_for(job_class: type[Base], configured: str | None) -> str:
    """The kind that runs ``job_class``: ``configured`` (the job's ``worker:`` option) when
    set, else ``asyncio`` for coroutine jobs and ``thread`` for the others. ValueError when
    the configured kind cannot run the class."""
    is_async = issubclass(job_class, AsyncBase)
    if configured is None:
        return "asyncio" if is_async else defaults.WORKER_KIND
    name = f"{job_class.__module__}.{job_class.__qualname__}"
    if is_async and configured != "asyncio":
        raise ValueError(
            f"{name} is an AsyncBase job (its methods are coroutines), which only the asyncio "
            f"kind runs; remove `worker: {configured}` or set it to asyncio"
        )
    if configured == "asyncio" and not is_async:
        raise ValueError(
            f"the asyncio kind runs AsyncBase jobs and {name} is not one; subclass "
            "process_balancer.AsyncBase with async def methods, or remove `worker: asyncio`"
        )
    return configured
