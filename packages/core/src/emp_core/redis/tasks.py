"""Stopping asyncio tasks for sure.

On Python 3.11 a cancellation that lands as one of redis-py's inner ``asyncio.wait_for`` calls
completes is lost (python/cpython#86296): the task carries on as if never cancelled. Whoever
stops a task that may be inside redis-py cancels again until it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger(__name__)


async def cancel_until_done(tasks: Iterable[asyncio.Task[Any]], *, within: float) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again every 50 ms while one lingers; give
    up (logging which) after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pending = {t for t in tasks if not t.done()}
    while pending and (left := deadline - loop.time()) > 0:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(left, 0.05))
    for task in pending:
        logger.error("task %s did not stop within %g s", task.get_name(), within)
