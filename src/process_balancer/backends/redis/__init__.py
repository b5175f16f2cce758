"""Redis coordination backend (``redis://``, ``rediss://``, ``unix://`` URLs): one Lua script
per operation, each one atomic round trip (the scripts are in ``lua/``)."""

from .backend import RedisBackend

__all__ = ["RedisBackend"]
