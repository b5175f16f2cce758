"""The async poller job: claim items from an HTTP work queue and handle each with awaits.

Every worker of ``poll_queue`` is a task on its process's one event loop, so a process runs
many slots without a thread each. One iteration of worker ``i``: an ``httpx.AsyncClient`` is
opened (an iteration context, so it is closed whatever happens), up to ``batch_size`` items
are claimed with the slot's fencing token, each item is fetched and marked done, and what
was not finished is released. A stop or a slot moving away cancels the running request at
once; ``unlock_records`` still releases the rest. With nothing to claim the worker sleeps
``idle_sleep`` seconds, without blocking the other slots.

Run from the repository root, beside ``examples/async_poller/server.py``:

    process-balancer run -c examples/async_poller/process_balancer.yml
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx

import process_balancer

logger = logging.getLogger("async_poller")


@contextlib.asynccontextmanager
async def http_client(job: PollQueue) -> AsyncIterator[None]:
    """An iteration context: the job's HTTP client, open for one iteration."""
    async with httpx.AsyncClient(
        base_url=job.options["base_url"],
        timeout=float(job.options.get("timeout", 10)),
        headers={"X-Runner": str(os.getpid())},
    ) as client:
        job.http = client
        try:
            yield
        finally:
            job.http = None


class PollQueue(process_balancer.AsyncBase):
    """Drains the example's HTTP work queue; each worker slot claims batches of its own."""

    iteration_context = (http_client,)
    http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        assert self.http is not None, "opened by the http_client iteration context"
        return self.http

    def _slot(self) -> dict[str, Any]:
        return {"worker": self.worker_index, "fence": self.fencing_token}

    async def lock_records(self) -> list[int]:
        limit = int(self.options.get("batch_size", 20))
        response = await self._client().post("/claim", json={**self._slot(), "limit": limit})
        if response.status_code == 409:
            logger.warning("worker %d: the queue refused our token", self.worker_index)
            return []
        response.raise_for_status()
        items: list[int] = response.json()["items"]
        if not items:
            self.status_sleep(float(self.options.get("idle_sleep", 1.0)))
        return items

    async def process_record(self, item: int) -> None:
        client = self._client()
        fetched = await client.get(f"/items/{item}")
        fetched.raise_for_status()
        value = fetched.json()["value"]
        done = await client.post(f"/items/{item}/done", json={**self._slot(), "value": value})
        if done.status_code == 409:
            logger.warning("worker %d: item %d was no longer ours", self.worker_index, item)
            return
        done.raise_for_status()

    async def unlock_records(self) -> None:
        if self.http is not None and self.fencing_token is not None:
            await self.http.post("/release", json=self._slot())
