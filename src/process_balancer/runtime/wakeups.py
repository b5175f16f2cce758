"""Wake-ups for threads waiting on a backend event, such as a released worker lock."""

from __future__ import annotations

from .kernel import SYSTEM, EventLike, Kernel


class Notifier:
    """Routes named backend events to the events of the threads waiting for them."""

    def __init__(self, kernel: Kernel = SYSTEM) -> None:
        self._mutex = kernel.lock()
        # Insertion-ordered (dicts, not sets): waiters are woken in the order they subscribed.
        self._waiters: dict[str, dict[EventLike, None]] = {}

    def subscribe(self, name: str, event: EventLike) -> None:
        with self._mutex:
            self._waiters.setdefault(name, {})[event] = None

    def unsubscribe(self, name: str, event: EventLike) -> None:
        with self._mutex:
            waiters = self._waiters.get(name)
            if waiters is not None:
                waiters.pop(event, None)
                if not waiters:
                    del self._waiters[name]

    def notify(self, name: str) -> None:
        """Wake the waiters of ``name``; for ``released <job>:<index>`` also those of every
        lock of the job (``released <job>:*``: a partitioned slot waits for its job's old
        generation to end)."""
        job, colon, _ = name.rpartition(":")
        with self._mutex:
            waiters = list(self._waiters.get(name, ()))
            if colon and name.startswith("released "):
                waiters += self._waiters.get(f"{job}:*", ())
        for event in waiters:
            event.set()
