"""Fixtures of the in-process worker tests: one process's part of a group on the in-memory
backend, its lease keeper, and what its workers share."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from process_balancer.backends.memory import MemoryBackend
from process_balancer.runtime.leases import LeaseKeeper, Membership
from process_balancer.runtime.workers.shared import SharedResources
from support.workers import IDENTITY


@pytest.fixture
def backend(namespace: str) -> Iterator[MemoryBackend]:
    """An in-memory group that ``IDENTITY`` has joined for 30 s."""
    b = MemoryBackend(f"memory://{namespace}", namespace)
    b.heartbeat(IDENTITY, traits={}, info={}, expiry=30, seen_assignment_version=-1)
    yield b
    b.close()


@pytest.fixture
def keeper() -> Iterator[LeaseKeeper]:
    """A running lease keeper whose membership is valid for 30 s."""
    membership = Membership()
    membership.extend(time.monotonic(), 30)
    k = LeaseKeeper(membership, lambda lease: None)
    k.start()
    yield k
    k.stop()


@pytest.fixture
def shared() -> Iterator[SharedResources]:
    """What the workers of the test's process share (the asyncio event loop), closed after."""
    resources = SharedResources()
    yield resources
    resources.close()
