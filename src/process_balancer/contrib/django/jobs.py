"""Jobs whose iterations use the Django ORM: stale connections are closed around each one.

Django closes a connection that is broken, in an unexpected transaction state or older than
``CONN_MAX_AGE`` when a request starts and when it ends (``close_old_connections``). A job's
iteration gets the same treatment here, so a database restart, a failover or an expired
connection between two iterations costs a reconnect, not a failed iteration. With
``CONN_HEALTH_CHECKS = True`` a persistent connection is also checked before the first query
of each iteration, which catches a server that dropped it while the job was idle.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from asgiref.sync import sync_to_async
from django import db

from ...job import AsyncBase, Base


@contextmanager
def fresh_connections(job: Base) -> Iterator[None]:
    """Close this thread's unusable or obsolete connections before the iteration and after
    it (also after an exception, so a connection the error broke is not kept)."""
    db.close_old_connections()
    try:
        yield
    finally:
        db.close_old_connections()


@asynccontextmanager
async def fresh_connections_async(job: Base) -> AsyncIterator[None]:
    """:func:`fresh_connections` for an asyncio job. Django runs the ORM calls of async code
    (``await Model.objects.aget(...)``, ``sync_to_async(f)()``) on one thread shared by the
    process, so the connections to close are that thread's, and they are closed there."""
    close = sync_to_async(db.close_old_connections, thread_sensitive=True)
    await close()
    try:
        yield
    finally:
        await close()


class DjangoJob(Base):
    """A :class:`process_balancer.Base` job that uses the Django ORM.

    Each worker slot is a thread, and Django gives each thread its own connection, so the
    slots of a process never share one. Wrap the writes of one record in
    ``transaction.atomic()``, and make them conditional on the worker's fencing token (a
    filtered ``update()`` that only lands while the row still carries ``self.fencing_token``)
    so a holder that was paused past its lease changes nothing when it wakes.

    A subclass that adds iteration contexts keeps this one first:
    ``iteration_context = (*DjangoJob.iteration_context, my_context)``.
    """

    iteration_context = (fresh_connections,)


class AsyncDjangoJob(AsyncBase):
    """An :class:`process_balancer.AsyncBase` job that uses Django's async ORM.

    Django runs async ORM calls on one thread per process, so every asyncio slot of the
    process shares that thread's connection and its queries run one at a time. A transaction
    must therefore stay inside one synchronous function (``transaction.atomic()`` does not
    work in async code): ``await sync_to_async(claim_batch)(self.fencing_token)``.
    """

    iteration_context = (fresh_connections_async,)
