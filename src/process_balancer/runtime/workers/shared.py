"""What the workers of one kind share in a process, such as the asyncio kind's event loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from ..kernel import SYSTEM, Kernel


class Resource(Protocol):
    """Something the workers of one kind share in a process (the asyncio kind's loop)."""

    def describe(self) -> dict[str, Any]: ...

    def dump(self) -> str:
        """What it runs now, as text, for a stack dump (TTIN, ``dump``)."""

    def close(self) -> None: ...


R = TypeVar("R", bound=Resource)


class SharedResources:
    """What the workers of a process share per kind, created when a first worker needs it
    and closed when the process exits (:meth:`close`). Nothing is created for a kind no job
    uses, so a process of thread jobs starts no event loop."""

    def __init__(self, kernel: Kernel = SYSTEM) -> None:
        self._mutex = kernel.lock()
        self._items: dict[str, Resource] = {}

    def get(self, key: str, make: Callable[[], R]) -> R:
        with self._mutex:
            found = self._items.get(key)
            if found is None:
                found = self._items[key] = make()
        return found  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        """What each resource reports in the process's heartbeat info."""
        with self._mutex:
            items = list(self._items.values())
        info: dict[str, Any] = {}
        for item in items:
            info.update(item.describe())
        return info

    def dump(self) -> str:
        """What the resources run now (the asyncio tasks' stacks), after the thread dump."""
        with self._mutex:
            items = list(self._items.values())
        return "".join(item.dump() for item in items)

    def close(self) -> None:
        with self._mutex:
            items, self._items = list(self._items.values()), {}
        for item in items:
            item.close()
