"""Worker counts set at runtime, and pause/resume, in Redis: the hash ``counts`` (job ->
count) and the hash ``paused`` (job -> the count it resumes to), each write one Lua script
(``set_count``, ``pause``, ``resume``) that bumps the version and tells the group."""

from __future__ import annotations

from ...config.defaults import MAX_WORKERS
from ..common import readable_pauses, runtime_count
from ..counts import argument, outcome
from .client import RedisClient


class RedisCounts(RedisClient):
    """The worker-count operations of :class:`~.backend.RedisBackend`."""

    def get_count(self, job_id: str) -> int | None:
        with self._errors(self._counts):
            raw = self.client.hget(self._counts, job_id)
        return runtime_count(raw, f"{self._counts}[{job_id}]")

    def set_count(
        self,
        job_id: str,
        *,
        to: int | None,
        by: int | None,
        default: int,
        maximum: int = MAX_WORKERS,
    ) -> int:
        count = self._set_count(job_id, to, by, default, maximum, unless_paused=False)
        assert count is not None
        return count

    def set_count_unless_paused(
        self,
        job_id: str,
        *,
        to: int | None,
        by: int | None,
        default: int,
        maximum: int = MAX_WORKERS,
    ) -> int | None:
        return self._set_count(job_id, to, by, default, maximum, unless_paused=True)

    def _set_count(
        self,
        job_id: str,
        to: object,
        by: object,
        default: object,
        maximum: object,
        *,
        unless_paused: bool,
    ) -> int | None:
        mode, value = ("to", to) if to is not None else ("by", by)
        args = [job_id, mode, argument(value), argument(default), self.channel, argument(maximum)]
        status, result, limit = self._run(
            "set_count",
            [self._counts, self._version, self._paused],
            [*args, "1" if unless_paused else "0"],
        )
        return outcome("set", job_id, status, result, limit, to=to, by=by, where=self._counts)

    def clear_count(self, job_id: str) -> None:
        with (
            self._errors(self._counts, self._paused, self._version),
            self.client.pipeline(transaction=True) as pipe,
        ):
            pipe.hdel(self._counts, job_id)
            pipe.hdel(self._paused, job_id)
            pipe.incr(self._version)
            pipe.publish(self.channel, "state")
            pipe.execute()

    def pause(self, job_id: str, *, default: int, maximum: int = MAX_WORKERS) -> int | None:
        status, value, limit = self._run(
            "pause",
            [self._counts, self._paused, self._version],
            [job_id, argument(default), self.channel, argument(maximum)],
        )
        return outcome("pause", job_id, status, value, limit, where=self._counts)

    def resume(self, job_id: str, *, maximum: int = MAX_WORKERS) -> int | None:
        status, value, limit = self._run(
            "resume",
            [self._counts, self._paused, self._version],
            [job_id, self.channel, argument(maximum)],
        )
        return outcome("resume", job_id, status, value, limit, where=self._paused)

    def paused_counts(self) -> dict[str, int]:
        with self._errors(self._paused):
            raw = self.client.hgetall(self._paused)
        return readable_pauses(
            (job_id, value, f"{self._paused}[{job_id!s}]") for job_id, value in raw.items()
        )
