"""The thread worker kind (the default): each slot's iterations run on a thread of its own."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..leases import LeaseKeeper
from ..wakeups import Notifier
from .base import Worker, WorkerSpec

__all__ = ["ThreadWorker", "Worker", "WorkerSpec"]


class ThreadWorker(Worker):
    """Runs the slot's iterations on a daemon thread named ``pb-<job>-<index>``."""

    kind = "thread"

    def __init__(
        self,
        spec: WorkerSpec,
        *,
        keeper: LeaseKeeper,
        notifier: Notifier,
        on_exit: Callable[[Worker], None],
    ) -> None:
        super().__init__(spec, keeper=keeper, notifier=notifier, on_exit=on_exit)
        self._thread = threading.Thread(
            target=self.run_slot, name=f"pb-{spec.job_id}-{spec.worker_index}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
