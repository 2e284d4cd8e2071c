"""Lease renewal from a thread of its own, so that nothing a connector does can starve it.

A connector that blocks the event loop (a synchronous GPU call, ``time.sleep``) would stop an
asyncio task from renewing, the lease would run out and the reaper would hand the job to another
worker while this one still works on it. The ``LeaseKeeper`` renews every held lease every
``lease / 3`` seconds from a daemon thread with its own synchronous Redis client, through the same
``emp_heartbeat`` function. When a renewal is refused (the job was cancelled or reassigned), it
tells the event loop at once with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from redis.exceptions import RedisError

from emp_core.errors import NotFound, StaleToken
from emp_core.queue.functions import Functions
from emp_core.queue.keys import Keys
from emp_core.queue.queue import ClaimedJob
from emp_core.redis.client import connect_sync

logger = logging.getLogger(__name__)

# Called in the event loop with (job id, fencing token, why) when a lease cannot be renewed.
LostHandler = Callable[[str, str, str], None]


class HeldLeases:
    """The claims whose leases a thread renews (job id -> fencing token), safe across threads."""

    def __init__(self) -> None:
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()

    def hold(self, claimed: ClaimedJob) -> None:
        """Renew this claim's lease from now on."""
        with self._lock:
            self._held[claimed.id] = claimed.token

    def drop(self, job_id: str, token: str) -> bool:
        """Stop renewing a claim (it finished, or was handed back); False if not held."""
        with self._lock:
            if self._held.get(job_id) != token:
                return False
            del self._held[job_id]
            return True

    def take(self, job_id: str) -> str | None:
        """Stop renewing a job whatever its token; the token it had, if held."""
        with self._lock:
            return self._held.pop(job_id, None)

    def take_all(self) -> dict[str, str]:
        with self._lock:
            held, self._held = self._held, {}
        return held

    def held(self) -> dict[str, str]:
        with self._lock:
            return dict(self._held)


class LeaseKeeper(HeldLeases):
    """Renews the leases of the jobs this worker holds until told to drop them."""

    def __init__(
        self,
        redis_url: str,
        keys: Keys,
        lease_seconds: float,
        *,
        loop: asyncio.AbstractEventLoop,
        on_lost: LostHandler,
        worker_id: str = "",
    ) -> None:
        super().__init__()
        self.keys = keys
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self.interval = lease_seconds / 3
        self.worker_id = worker_id
        self.renewals = 0  # successful renewals, for tests and logs
        # A timeout well inside the lease, so a hung connection cannot hold renewal up for long.
        timeout = max(0.5, lease_seconds / 3)
        self._client = connect_sync(
            redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._loop = loop
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        name = f"emp-lease-{self.worker_id}" if self.worker_id else "emp-lease"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self, wait_s: float = 5.0) -> None:
        """Stop renewing and close the client (leases still held simply run out)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(wait_s)
            self._thread = None
        self._client.close()

    def renew_all(self) -> None:
        """Renew every held lease once (the thread calls this every ``interval`` seconds)."""
        for job_id, token in self.held().items():
            try:
                Functions.heartbeat_sync(self._client, self.keys, job_id, token, self.lease_ms)
            except (StaleToken, NotFound) as exc:
                self.drop(job_id, token)
                self._tell_loop(job_id, token, exc.message)
            except (RedisError, OSError) as exc:
                # Try again at the next tick; the lease has two more before it runs out.
                logger.warning(
                    "worker %s could not renew the lease of job %s: %s", self.worker_id, job_id, exc
                )
            else:
                self.renewals += 1

    def _tell_loop(self, job_id: str, token: str, why: str) -> None:
        # A closed loop means the worker is gone anyway.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._on_lost, job_id, token, why)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.renew_all()
            except Exception:
                logger.exception("lease renewal on worker %s failed", self.worker_id)
