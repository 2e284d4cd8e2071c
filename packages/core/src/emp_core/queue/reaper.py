"""The lease reaper every EMP process runs (workers, machine supervisors, the API).

Recovery must not depend on which processes happen to be alive: a machine whose workers all
crashed still has its supervisor, and the supervisor reaps too. Many processes reaping must not
cost many sweeps either: each ``tick`` is one ``emp_reap`` call that sweeps only if no process
has swept within the interval (a ``SET NX PX`` on ``Keys.reaper_lock`` inside the function). A
process ticks about twice per interval, with jitter, so a sweep happens about once per interval
whether one process or a thousand run it, and a dead worker's job is pending again within its
lease plus one interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass

from redis.exceptions import RedisError

from emp_core.errors import EmpError
from emp_core.queue.queue import Queue
from emp_core.queue.stats import sample_depth

logger = logging.getLogger(__name__)


@dataclass
class ReaperStats:
    ticks: int = 0  # emp_reap calls
    sweeps: int = 0  # calls that swept (held the interval's lock)
    requeued: int = 0
    failed: int = 0
    promoted: int = 0


class Reaper:
    """``await Reaper(queue, owner="worker w1").run()`` in a task; cancel it to stop."""

    def __init__(self, queue: Queue, *, owner: str, limit: int = 1000) -> None:
        self.queue = queue
        self.owner = owner[:200]
        self.limit = limit
        self.interval_s = queue.settings.reap_interval_seconds
        self.stats = ReaperStats()

    async def tick(self) -> bool:
        """One call: sweep if nobody swept within the interval. True when this call swept."""
        s = self.queue.settings
        requeued, failed, promoted, swept = await self.queue.functions.reap(
            self.limit, s.retention_seconds, s.events_maxlen, s.max_lost_leases,
            gate_ms=max(1, int(self.interval_s * 1000)), owner=self.owner,
        )  # fmt: skip
        if swept:
            # The dashboard's depth history, sampled once per interval by whoever swept.
            await sample_depth(self.queue.redis, self.queue.keys)
        st = self.stats
        st.ticks += 1
        st.sweeps += swept
        st.requeued += requeued
        st.failed += failed
        st.promoted += promoted
        if requeued or failed:
            logger.info(
                "reaper (%s) requeued %d job%s whose worker stopped renewing its lease, "
                "failed %d that lost too many", self.owner, requeued,
                "" if requeued == 1 else "s", failed,
            )  # fmt: skip
        return swept

    async def run(self) -> None:
        """Tick about twice per interval, starting at a random phase, until cancelled."""
        half = self.interval_s / 2
        await asyncio.sleep(random.uniform(0, half))
        while True:
            try:
                await self.tick()
            except (RedisError, OSError, EmpError) as exc:
                logger.warning("reaper (%s) could not run: %s", self.owner, exc)
                if "function not found" in str(exc).lower():
                    # A supervisor may start before any worker has loaded the library.
                    with contextlib.suppress(RedisError, OSError, EmpError):
                        await self.queue.functions.load()
            await asyncio.sleep(half * random.uniform(0.8, 1.2))
