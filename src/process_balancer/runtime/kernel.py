"""Clocks, threads, events, locks and randomness as the runtime sees them.

Every part of the runtime (manager, supervisor, lease keeper, workers) reads time, starts
threads, waits and draws random numbers through one :class:`Kernel`. In production that is
:data:`SYSTEM`, a thin veneer over :mod:`time`, :mod:`threading` and :mod:`random` whose
methods *are* those functions, so nothing on the per-record path pays for the indirection.
The deterministic simulation (``process_balancer.testing.simulation``) passes a kernel whose
threads are scheduled one at a time by a seeded scheduler on a simulated clock, which lets it
run the real runtime code through thousands of fault scenarios, each replayable from its seed.

The rule that makes this work: code in the runtime never calls ``time.monotonic()``,
``time.time()``, ``threading.Thread/Event/Lock`` or ``random`` directly, and never holds a
``threading.Lock`` from the kernel across a call that may block (a backend call, a wait).
``tests/unit/test_layers.py`` checks the first half.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol


class EventLike(Protocol):
    """What the runtime uses of :class:`threading.Event`."""

    def set(self) -> None: ...

    def clear(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class LockLike(Protocol):
    """What the runtime uses of :class:`threading.Lock`."""

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool: ...

    def release(self) -> None: ...

    def __enter__(self) -> bool: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None: ...


class ThreadLike(Protocol):
    """What the runtime uses of :class:`threading.Thread`."""

    name: str

    def start(self) -> None: ...

    def is_alive(self) -> bool: ...

    def join(self, timeout: float | None = None) -> None: ...


class Kernel:
    """Real time, real threads: the production kernel (:data:`SYSTEM`).

    ``monotonic`` measures durations and deadlines; ``time`` is the wall clock, used only for
    what is shown to people (start times, heartbeat times), never for a decision.
    """

    #: Seconds on a clock that never goes back.
    monotonic: Callable[[], float] = staticmethod(time.monotonic)
    #: Seconds since the epoch, for display.
    time: Callable[[], float] = staticmethod(time.time)
    #: A random float in [a, b] (jitter of retries and backoffs).
    uniform: Callable[[float, float], float] = staticmethod(random.uniform)
    #: ``n`` random bytes as hex (a stable identity's instance nonce).
    token: Callable[[int], str] = staticmethod(secrets.token_hex)

    def event(self) -> EventLike:
        return threading.Event()

    def lock(self) -> LockLike:
        return threading.Lock()

    def thread(self, target: Callable[[], object], name: str) -> ThreadLike:
        """A daemon thread running ``target``, not started yet."""
        return threading.Thread(target=target, name=name, daemon=True)


#: The kernel of every process that is not simulated.
SYSTEM = Kernel()
