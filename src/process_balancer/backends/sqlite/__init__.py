"""SQLite coordination backend (``sqlite:///path`` URLs): the embedded default, for the
processes of one host sharing one database file."""

from .backend import SQLiteBackend

__all__ = ["SQLiteBackend"]
