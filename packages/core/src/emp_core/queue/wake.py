"""Wake-ups for idle workers: one Redis subscription per worker process instead of polling.

Targeted (issue 10): a slot whose claim found nothing is entered, by that claim, in the idle set
of its capability profile (``Keys.idle``). Whenever a job becomes pending (submit, retry due,
lease expired, released), the Lua pops one idle slot of a profile able to run it and publishes
``{"type": "wake", "slot": n}`` on that worker's ``Keys.control_channel``; the ``Waker`` rings
that slot's ``WakeSignal`` alone. One job wakes one slot, never every idle worker of the service.
The cancel function publishes ``{"type": "cancel", "job_id": ...}`` on the same channel. A
message on ``Keys.wake_channel(service)`` (nothing in the library sends one now) still rings
every slot.

No wake-up is lost when a slot follows this order::

    signal.clear()                  # 1. before the claim
    result = await queue.claim(caps)  # 2. sees every job made pending before it ran
    if result.claimed is None:
        await signal.wait(timeout)    # 3. returns at once if a job arrived after 1.

and the ``Waker`` was started (subscribed, with Redis's confirmation read) before the first claim.
The timeout (the claim's ``retry_in`` hint, or a few seconds) only covers a connection that dropped
and missed messages while reconnecting.

Every channel is sharded (``SSUBSCRIBE``, ``emp_core.redis.subscription``): the Lua's ``SPUBLISH``
stays on the queue's shard. Whenever Redis confirms a subscription again (a reconnect, or on a
cluster the channel's new owner after a failover) every slot tries a claim, since wake-ups sent
meanwhile are gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from emp_core.queue.keys import Keys
from emp_core.redis import text
from emp_core.redis.subscription import Message, ShardSubscription
from emp_core.redis.tasks import cancel_until_done

logger = logging.getLogger(__name__)

ControlHandler = Callable[[dict[str, Any]], None]

# After a lost connection, how long to wait before listening again (seconds).
_RECONNECT_DELAY = 0.5
# How long ``close`` keeps cancelling the listener (see ``emp_core.redis.tasks``) before leaving it.
_CLOSE_S = 2.0


class WakeSignal:
    """The doorbell of one idle slot: clear it before a claim, wait on it after an empty one.
    ``queue`` names the queue whose job rang it (a targeted wake-up; None for any other ring),
    so a slot serving several queues claims there first: the job that woke it is waiting in
    that queue, and a wake-up goes to one slot only."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.queue: str | None = None

    def clear(self) -> None:
        self._event.clear()
        self.queue = None

    def set(self, queue: str | None = None) -> None:
        self.queue = queue
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, seconds: float | None) -> bool:
        """Wait until rung or ``seconds`` pass (None: no limit); True when rung."""
        if self._event.is_set():
            return True
        try:
            async with asyncio.timeout(seconds):
                await self._event.wait()
        except TimeoutError:
            return False
        return True


class Waker:
    """One pub/sub connection for a worker process: wake channels of its services and its own
    control channel. ``on_control`` receives each decoded control message (in the event loop)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys | Sequence[Keys],
        services: Iterable[str],
        worker_id: str | None = None,
        *,
        on_control: ControlHandler | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        # A worker serving several queues hears the wake-ups and cancels of each of them.
        queues = [keys] if isinstance(keys, Keys) else list(keys)
        services = list(services)
        self.redis = redis
        self.keys = queues[0]
        self.wake_channels = [k.wake_channel(s) for k in queues for s in services]
        self.control_channels = [k.control_channel(worker_id) for k in queues] if worker_id else []
        self._queue_of = {c: k.queue for c, k in zip(self.control_channels, queues, strict=False)}
        self.on_control = on_control
        # Called when the subscription's connection is lost: Redis restarted, failed over or
        # dropped us, and what the process keeps there (its registry entry) may be gone.
        self.on_lost = on_lost
        self.wakeups = 0  # wake messages received, for tests and logs
        self._signals: set[WakeSignal] = set()
        self._by_slot: dict[int, WakeSignal] = {}
        self._subscription: ShardSubscription | None = None
        self._listener: asyncio.Task[None] | None = None

    @property
    def channels(self) -> list[str]:
        return [*self.wake_channels, *self.control_channels]

    def signal(self, slot: int | None = None) -> WakeSignal:
        """A new doorbell rung by every broadcast wake-up from now on, and, for a ``slot``, by
        the wake-ups the Lua sends that slot alone."""
        sig = WakeSignal()
        self._signals.add(sig)
        if slot is not None:
            self._by_slot[slot] = sig
        return sig

    def discard(self, sig: WakeSignal) -> None:
        self._signals.discard(sig)
        for slot in [s for s, v in self._by_slot.items() if v is sig]:
            del self._by_slot[slot]

    def wake_all(self) -> None:
        """Ring every doorbell (a wake-up message, a reconnect, or shutdown)."""
        for sig in self._signals:
            sig.set()

    async def start(self, confirm_within: float = 10.0) -> None:
        """Subscribe and wait for Redis to confirm every channel, then listen in a task. Once this
        returns, every later publish reaches this process."""
        if self._listener is not None:
            return
        subscription = ShardSubscription(self.redis, self.channels)
        self._subscription = subscription
        for message in await subscription.open(confirm_within):
            self._dispatch(message)
        self._listener = asyncio.create_task(self._listen(subscription), name="emp-waker")

    async def close(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await cancel_until_done([listener], within=_CLOSE_S)
        if self._subscription is not None:
            await self._subscription.aclose()
            self._subscription = None

    async def __aenter__(self) -> Waker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _listen(self, subscription: ShardSubscription) -> None:
        while True:
            try:
                async for message in subscription.listen():
                    self._dispatch(message)
            except (RedisError, OSError) as exc:
                # redis-py reconnects and subscribes again on the next read (on a cluster, on the
                # slot's new owner once the slot map shows it); messages published meanwhile are
                # gone, so every slot tries a claim now and again on the confirmation.
                logger.warning("wake-up subscription lost (%s); listening again", exc)
                if self.on_lost is not None:
                    self.on_lost()
                await asyncio.sleep(_RECONNECT_DELAY)
                self.wake_all()

    def _dispatch(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "ssubscribe":
            # A resubscription after a reconnect or a move: wake-ups may have been missed.
            self.wake_all()
            return
        if kind != "smessage":
            return
        channel = text(message["channel"])
        if channel in self.control_channels:
            self._control(message["data"], self._queue_of.get(channel))
            return
        self.wakeups += 1
        self.wake_all()

    def _control(self, data: Any, queue: str | None = None) -> None:
        try:
            decoded = orjson.loads(data)
        except orjson.JSONDecodeError:
            logger.warning("ignored a control message that is not JSON: %r", data)
            return
        if not isinstance(decoded, dict):
            logger.warning("ignored a control message that is not an object: %r", data)
            return
        if decoded.get("type") == "wake":
            # A job this slot can run became pending (targeted: the Lua woke this slot alone).
            self.wakeups += 1
            sig = self._by_slot.get(decoded.get("slot"))  # type: ignore[arg-type]
            if sig is not None:
                sig.set(queue)
            else:
                self.wake_all()  # a slot this process does not know: let every slot look
            return
        if self.on_control is None:
            return
        try:
            self.on_control(decoded)
        except Exception:
            logger.exception("control message %r could not be handled", decoded)
