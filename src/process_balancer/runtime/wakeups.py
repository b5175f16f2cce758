"""Wake-ups for threads waiting on a backend event, such as a released worker lock."""

from __future__ import annotations

import threading
from collections import defaultdict


class Notifier:
    """Routes named backend events to the threading.Events of the threads waiting for them."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: defaultdict[str, set[threading.Event]] = defaultdict(set)

    def subscribe(self, name: str, event: threading.Event) -> None:
        with self._mutex:
            self._waiters[name].add(event)

    def unsubscribe(self, name: str, event: threading.Event) -> None:
        with self._mutex:
            waiters = self._waiters.get(name)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[name]

    def notify(self, name: str) -> None:
        with self._mutex:
            waiters = list(self._waiters.get(name, ()))
        for event in waiters:
            event.set()
