"""The WebSocket fan-out hub: one Redis subscription per process (an API or a studio process),
shared by all of that process's sockets.

Every job event of the queue arrives once on ``Keys.events_channel()``; the hub decodes and
encodes it once and hands the same text to each interested socket's ``Subscription``: the
sockets following that job, and the admin sockets whose filter it passes. Handing over never
waits: each socket has its own bounded backlog and its own sender task, so a slow socket falls
behind alone and never stalls the others or the hub.

When a backlog is full the oldest progress event is dropped first (a later one supersedes it),
then the oldest other non-terminal event; a terminal event is never dropped. A socket so slow that
its backlog holds four times its limit in undroppable events is closed instead (1013).

If the subscription's connection drops, Redis forgets what it published meanwhile; on reconnecting
the hub puts a ``gap`` marker in every backlog, so job sockets re-read their job's stream from the
last event they sent (nothing lost) and admin sockets are told events may be missing.

The subscription is sharded (``SSUBSCRIBE``, ``emp_core.redis.subscription``): the Lua's
``SPUBLISH`` keeps each queue's events on its shard. With several queues on a cluster the one
subscription holds a connection to each queue's node; a failover moves the channel to the new
primary, and that confirmation counts as a reconnect (a gap).

The same connection listens to the revocations channel (``emp_sql.revocations``): a socket whose
principal a revocation ends is closed with 1008 at once, and the process's listeners (the API's
token cache) drop what they hold. After a reconnect the listeners are told to drop everything,
since a revocation may have been missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from emp_core.jobs.events import EventType, JobEvent
from emp_core.redis import text
from emp_core.redis.subscription import Message, ShardSubscription
from emp_sql.auth import Principal
from emp_sql.revocations import Revocation

logger = logging.getLogger(__name__)

Listener = Callable[[JobEvent], None]
# Called with each revocation heard, or None when some may have been missed (a reconnect).
RevocationListener = Callable[[Revocation | None], None]

CLOSE_POLICY = 1008  # the socket's principal lost its access
CLOSE_TRY_AGAIN = 1013  # the socket could not keep up and events were left behind

_PROGRESS, _OTHER, _TERMINAL, _CONTROL = "progress", "other", "terminal", "control"
_EVICTABLE = (_PROGRESS, _OTHER)
_OVERFLOW_FACTOR = 4


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message for sockets, encoded once for all of them."""

    text: str
    kind: str
    job_id: str | None = None
    event_id: str | None = None
    service: str | None = None
    status: str | None = None


GAP = Outgoing(
    orjson.dumps({"type": "gap", "message": "the event feed reconnected; events may be missing"})
    .decode(),
    _CONTROL,
)  # fmt: skip


def control(body: dict[str, Any]) -> Outgoing:
    """A message of the server's own (an acknowledgement, an error) queued behind events."""
    return Outgoing(orjson.dumps(body).decode(), _CONTROL)


class Subscription:
    """One socket's view of the hub: what it wants and what waits to be sent to it."""

    def __init__(
        self,
        *,
        limit: int,
        job_id: str | None = None,
        services: Iterable[str] | None = None,
        statuses: Iterable[str] | None = None,
        principal: Principal | None = None,
    ) -> None:
        self.limit = limit
        self.job_id = job_id
        self.principal = principal
        self.ended: tuple[int, str] | None = None
        self.services: frozenset[str] | None = None
        self.statuses: frozenset[str] | None = None
        self.set_filter(services, statuses)
        self.dropped = 0
        self.overflowed = False
        self._backlog: deque[Outgoing] = deque()
        self._ready = asyncio.Event()

    def set_filter(self, services: Iterable[str] | None, statuses: Iterable[str] | None) -> None:
        """Only events of these services and statuses (None: all)."""
        self.services = None if services is None else frozenset(services)
        self.statuses = None if statuses is None else frozenset(statuses)

    def wants(self, item: Outgoing) -> bool:
        if item.kind == _CONTROL:
            return True
        if self.services is not None and item.service not in self.services:
            return False
        return self.statuses is None or item.status in self.statuses

    def end(self, code: int, reason: str) -> None:
        """Stop this socket's feed: ``get`` returns None from now on, and ``farewell`` says why."""
        if self.ended is None:
            self.ended = (code, reason[:120])
            self._backlog.clear()
            self._ready.set()

    @property
    def farewell(self) -> tuple[int, str]:
        """The close code and reason for a socket whose ``get`` returned None."""
        return self.ended or (CLOSE_TRY_AGAIN, "too slow: events were left behind")

    def push(self, item: Outgoing) -> None:
        """Queue ``item`` without waiting, dropping older droppable events past the limit."""
        if self.overflowed or self.ended is not None:
            return
        full = len(self._backlog) >= self.limit and not self._evict()
        if full and len(self._backlog) >= self.limit * _OVERFLOW_FACTOR:
            self.overflowed = True
            self._ready.set()
            return
        self._backlog.append(item)
        self._ready.set()

    def _evict(self) -> bool:
        for kind in _EVICTABLE:
            for index, queued in enumerate(self._backlog):
                if queued.kind == kind:
                    del self._backlog[index]
                    self.dropped += 1
                    return True
        return False

    async def get(self) -> Outgoing | None:
        """The next message, waiting for one; None once the socket fell too far behind or its
        principal lost its access (``farewell`` says which)."""
        while not self._backlog and not self.overflowed and self.ended is None:
            self._ready.clear()
            await self._ready.wait()
        if self.overflowed or self.ended is not None:
            return None
        return self._backlog.popleft()

    def __len__(self) -> int:
        return len(self._backlog)


def _kind(event: JobEvent) -> str:
    if event.is_terminal:
        return _TERMINAL
    return _PROGRESS if event.type == EventType.PROGRESS else _OTHER


class EventHub:
    """Holds the process's subscription to the events channel and its sockets' subscriptions."""

    def __init__(
        self,
        redis: Redis,
        channel: str | Sequence[str],
        *,
        backlog: int = 256,
        revocations: str | None = None,
    ) -> None:
        self.redis = redis
        # Several when the deployment names several queues: each has its events channel.
        self.channels = [channel] if isinstance(channel, str) else list(channel)
        self.revocations = revocations
        self.backlog = backlog
        self._revocation_listeners: list[RevocationListener] = []
        self._by_job: dict[str, set[Subscription]] = {}
        self._firehose: set[Subscription] = set()
        self._listeners: list[Listener] = []
        self.unwatched = 0  # events dropped undecoded: no socket or listener wanted them
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connected_before = False
        self.delivered = 0

    # --- sockets ---------------------------------------------------------------------------------
    def follow_job(self, job_id: str, principal: Principal | None = None) -> Subscription:
        sub = Subscription(limit=self.backlog, job_id=job_id, principal=principal)
        self._by_job.setdefault(job_id, set()).add(sub)
        return sub

    def follow_all(self, principal: Principal | None = None) -> Subscription:
        sub = Subscription(limit=self.backlog, principal=principal)
        self._firehose.add(sub)
        return sub

    def leave(self, sub: Subscription) -> None:
        if sub.job_id is None:
            self._firehose.discard(sub)
            return
        subs = self._by_job.get(sub.job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_job[sub.job_id]

    def listen(self, listener: Listener) -> None:
        """Call ``listener`` with every job event (synchronously: it must not block)."""
        self._listeners.append(listener)

    def on_revocation(self, listener: RevocationListener) -> None:
        """Call ``listener`` with every revocation heard (synchronously: it must not block)."""
        self._revocation_listeners.append(listener)

    def revoke(self, revocation: Revocation) -> int:
        """Close the sockets whose principal ``revocation`` ends and tell the listeners; the
        number of sockets closed. Called for each message on the revocations channel."""
        self._tell(revocation)
        closed = 0
        for sub in self._all():
            if sub.principal is not None and revocation.ends(sub.principal):
                sub.end(CLOSE_POLICY, revocation.reason)
                closed += 1
        return closed

    def _tell(self, revocation: Revocation | None) -> None:
        for listener in self._revocation_listeners:
            try:
                listener(revocation)
            except Exception:
                logger.exception("revocation listener %r failed", listener)

    @property
    def sockets(self) -> int:
        return len(self._firehose) + sum(len(s) for s in self._by_job.values())

    # --- the subscription ------------------------------------------------------------------------
    async def start(self, wait_s: float = 10.0) -> None:
        """Subscribe and return once Redis has confirmed it, so no later event is missed."""
        self._task = asyncio.create_task(self._run(), name="event-hub")
        await asyncio.wait_for(self._ready.wait(), wait_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = 0.1
        while True:
            channels = self.channels + ([self.revocations] if self.revocations else [])
            subscription = ShardSubscription(self.redis, channels)
            try:
                await self._subscribe(subscription)
                delay = 0.1
                resubscribed = False
                async for message in subscription.listen():
                    if message["type"] == "ssubscribe":
                        # redis-py subscribed again (a reconnect, or the channel's new owner
                        # after a failover): one gap per burst of confirmations.
                        if not resubscribed:
                            self._reconnected(None)
                        resubscribed = True
                        continue
                    resubscribed = False
                    self._handle(message)
            except (RedisError, OSError) as exc:
                logger.warning("event hub lost its Redis subscription (%s); reconnecting", exc)
            finally:
                await subscription.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _handle(self, message: Message) -> None:
        if message["type"] != "smessage":
            return
        if self.revocations is not None and text(message["channel"]) == self.revocations:
            self._revocation(message["data"])
        else:
            self.dispatch(message["data"])

    async def _subscribe(self, subscription: ShardSubscription) -> None:
        early = await subscription.open()  # from here on every published event reaches us
        if self._connected_before:
            self._reconnected(None)
        self._connected_before = True
        for message in early:
            self._handle(message)
        self._ready.set()

    def _reconnected(self, _connection: Any) -> None:
        logger.info("event hub resubscribed; sockets re-read what they may have missed")
        self._tell(None)
        for sub in self._all():
            sub.push(GAP)

    def _revocation(self, data: bytes | str) -> None:
        try:
            revocation = Revocation.decode(data)
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            logger.warning("event hub ignored a revocation it cannot read: %.200r", data)
            self._tell(None)
            return
        closed = self.revoke(revocation)
        if closed:
            logger.info("closed %d socket(s): %s", closed, revocation.reason)

    def _all(self) -> Iterable[Subscription]:
        yield from self._firehose
        for subs in self._by_job.values():
            yield from subs

    # --- fan-out ---------------------------------------------------------------------------------
    def dispatch(self, data: bytes | str) -> None:
        """Hand one published message to every interested socket and listener."""
        try:
            body = orjson.loads(data)
            job_id = body["job_id"]
            if not (self._listeners or self._firehose or job_id in self._by_job):
                self.unwatched += 1  # nobody watches this job: no pydantic decoding at all
                return
            event = JobEvent.from_fields(body["event_id"], job_id, body)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self._forward_other(data)
            return
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not stop the fan-out
                logger.exception("event hub listener %r failed", listener)
        item = Outgoing(
            event.model_dump_json(), _kind(event), event.job_id, event.event_id, event.service,
            event.status,
        )  # fmt: skip
        for sub in self._by_job.get(event.job_id, ()):
            sub.push(item)
        for sub in self._firehose:
            if sub.wants(item):
                sub.push(item)
        self.delivered += 1

    def _forward_other(self, data: bytes | str) -> None:
        """A message that is not a job event (a worker event, say) goes to admin sockets as is."""
        raw = text(data)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            logger.debug("event hub ignored a message that is not JSON: %.200s", raw)
            return
        if not isinstance(body, dict):
            return
        item = Outgoing(raw, _OTHER, service=body.get("service"), status=body.get("status"))
        for sub in self._firehose:
            if sub.wants(item):
                sub.push(item)
