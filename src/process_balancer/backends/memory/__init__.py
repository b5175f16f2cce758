"""The in-memory backend: one group state shared by every backend opened with the same
``memory://NAME`` inside one Python process (unit tests, embedding)."""

from .backend import MemoryBackend
from .store import ManualClock, wipe

__all__ = ["ManualClock", "MemoryBackend", "wipe"]
