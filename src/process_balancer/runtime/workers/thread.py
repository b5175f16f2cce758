"""The thread worker kind (the default): each slot's iterations run on a thread of its own."""

from __future__ import annotations

from collections.abc import Callable

from ..kernel import SYSTEM, Kernel
from ..leases import LeaseKeeper
from ..wakeups import Notifier
from .base import Worker, WorkerSpec
from .shared import SharedResources

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
        kernel: Kernel = SYSTEM,
        shared: SharedResources | None = None,
    ) -> None:
        super().__init__(
            spec, keeper=keeper, notifier=notifier, on_exit=on_exit, kernel=kernel, shared=shared
        )
        self._thread = kernel.thread(self.run_slot, f"pb-{spec.job_id}-{spec.worker_index}")

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
