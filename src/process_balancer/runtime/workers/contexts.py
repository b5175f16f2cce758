"""A job's iteration contexts: what is entered around every iteration that holds the lock.

A job names them in its class (``iteration_context = (factory, ...)``) and in its config
(``iteration_context: [module:factory, ...]``); each factory is called with the job, whose
``job_id``, ``worker_index`` and ``fencing_token`` are set, and returns a context manager
(an async one too, for an AsyncBase job). They are entered in order before ``lock_records``
and exited in reverse after ``unlock_records``, also after an exception or a lost lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack, ExitStack
from typing import Any

from ...config.loader import load_factory
from ...job import Base, IterationContext


def iteration_contexts(job_class: type[Base], options: Mapping[str, Any]) -> list[IterationContext]:
    """The job class's factories, then those its config option names (checked when the
    config was loaded, so importing them again only reads ``sys.modules``)."""
    names = options.get("iteration_context") or ()
    if isinstance(names, str):
        names = [names]
    return [*job_class.iteration_context, *(load_factory(name) for name in names)]


def enter_all(factories: list[IterationContext], job: Base) -> ExitStack:
    """Every context entered, in order; exiting the stack exits them in reverse. A factory
    that returns an async context manager is a mistake here (a thread job cannot await)."""
    stack = ExitStack()
    with stack:
        for factory in factories:
            context: Any = factory(job)
            if not hasattr(context, "__enter__"):
                raise TypeError(
                    f"iteration_context {factory!r} returned {context!r}, which is not a "
                    "context manager (an async one needs an AsyncBase job)"
                )
            stack.enter_context(context)
        return stack.pop_all()
    raise AssertionError("unreachable")  # pragma: no cover


async def enter_all_async(factories: list[IterationContext], job: Base) -> AsyncExitStack:
    """Every context entered, in order, async ones awaited; exiting the stack exits them in
    reverse."""
    stack = AsyncExitStack()
    async with stack:
        for factory in factories:
            context: Any = factory(job)
            if hasattr(context, "__aenter__"):
                await stack.enter_async_context(context)
            elif hasattr(context, "__enter__"):
                stack.enter_context(context)
            else:
                raise TypeError(
                    f"iteration_context {factory!r} returned {context!r}, which is not a "
                    "context manager"
                )
        return stack.pop_all()
    raise AssertionError("unreachable")  # pragma: no cover
