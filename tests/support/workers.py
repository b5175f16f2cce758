"""What the in-process worker tests share besides their fixtures (``tests/unit/conftest.py``)."""

from __future__ import annotations

#: The identity of the test's own process in its in-memory group.
IDENTITY = "test-host:1:abc"
