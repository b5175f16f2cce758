"""One live process of the group, as the assignment sees it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Member"]


@dataclass(frozen=True)
class Member:
    """One live process of the group, as the assignment sees it."""

    #: Unique process identity, ``host:pid:nonce``.
    identity: str
    #: The process's ``max_threads``: the most slots it may run over all jobs together.
    capacity: int
    #: False while the process is quiet or stopping: it then gets no slot at all.
    active: bool = True
    #: Job ids this process can run (those in its config); None means any job.
    jobs: frozenset[str] | None = None
    #: The tags the process declares (``tags:``, ``run --tag``); a job may require or prefer
    #: some. A process of a version without tags has none.
    tags: frozenset[str] = frozenset()

    def can_run(self, job_id: str) -> bool:
        """Whether this member runs ``job_id`` at all (placement rules aside)."""
        return self.active and (self.jobs is None or job_id in self.jobs)
