"""The queue: the Redis key schema, the typed wrapper of the Lua Function library, the service layer
over it (``Queue``), wake-ups, idempotency keys and backlog figures.

``Queue`` and ``ClaimedJob`` are importable from here (``from emp_core.queue import Queue``), the
public path for callers. They load on first use (PEP 562) so that importing a light module of
this package, such as ``emp_core.queue.keys`` from ``emp_core.settings``, does not import the
service layer, which itself needs the settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emp_core.queue.queue import ClaimedJob, Queue

__all__ = ["ClaimedJob", "Queue"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from emp_core.queue import queue

        return getattr(queue, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
