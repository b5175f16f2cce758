"""Taking the worker lock, written once for every worker kind, as a *plan*.

A plan is a generator that yields what it needs done: a float means "wait up to this many
seconds for the worker's wake-up", a callable means "make this blocking call (a backend
round trip) and send me its result". A thread carries a plan out with blocking waits
(:func:`run_plan`); the asyncio kind carries the same plan out with awaits
(:func:`run_plan_async`), making the calls on helper threads so that its event loop never
waits on the backend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

T = TypeVar("T")

#: One step of a plan: seconds to wait for the worker's wake-up, or a blocking call to make.
Step = float | Callable[[], Any]
Plan = Generator[Step, Any, T]


def run_plan(plan: Plan[T], wait: Callable[[float], object]) -> T:
    """Carry ``plan`` out on this thread: waits with ``wait``, calls made here; an exception
    of a call is thrown back into the plan (whose cleanup runs) and comes out of here."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = plan.throw(error) if error is not None else plan.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        error = reply = None
        try:
            reply = step() if callable(step) else wait(step)
        except BaseException as exc:
            error = exc


async def run_plan_async(
    plan: Plan[T],
    wait: Callable[[float], Awaitable[object]],
    call: Callable[[Callable[[], Any]], Awaitable[Any]],
) -> T:
    """:func:`run_plan` on an event loop: waits awaited with ``wait``, calls made through
    ``call`` (which runs them off the loop)."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = plan.throw(error) if error is not None else plan.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        error = reply = None
        try:
            reply = await call(step) if callable(step) else await wait(step)
        except BaseException as exc:
            error = exc
