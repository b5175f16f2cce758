"""process-balancer: long-running, iterative jobs balanced across processes and hosts."""

from __future__ import annotations

from .job import Base

__version__ = "0.1.0"

__all__ = ["Base", "__version__"]
