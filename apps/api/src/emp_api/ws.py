"""WebSocket routes: one job's events, and every event for admins.

The token is checked before the socket is accepted (``Authorization: Bearer``, a single-use
``?ticket=`` from ``POST /api/ws-tickets``, or the deprecated ``?token=``); a
refused socket gets an HTTP error response with the usual JSON body where the server supports
it (uvicorn does), a close with 1008 otherwise.

``/ws/jobs/{id}`` subscribes to the hub *first*, then replays the job's stream (XRANGE), then
sends what the hub delivers, skipping every event at or before the last stream id sent: the
subscription covers what happens during the replay, and the id check drops what both delivered.
After the terminal event it closes with 1000.
With ``?position=1`` a pending job's socket also gets ``{"type": "position", …}`` messages (the
fields of ``GET /api/jobs/{id}/position``): one at the start and one whenever the place changes,
looked at every ``ws_position_seconds`` while the job waits (its place moves with other jobs'
events, not its own). Each look is the bounded computation of ``emp_core.queue.position``
(commands grow with workers and classes, never with the jobs pending). Opt-in, so that clients
reading every message as a job event are not surprised.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import orjson
from fastapi import APIRouter, Request, WebSocket
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emp_api.deps import PrincipalDep, ServicesDep, bearer, socket_principal
from emp_api.errors import error_response
from emp_api.state import Services
from emp_core.errors import EmpError, InvalidInput, invalid_from_validation
from emp_core.jobs.capabilities import Service
from emp_core.jobs.events import EventType, JobEvent, replay
from emp_core.jobs.job import Job, JobStatus
from emp_core.queue.queue import Queue
from emp_sql.auth import Forbidden, Principal
from emp_sql.forensics import ForensicsReader
from emp_sql.tokens import hash_token
from emp_web import tickets
from emp_web.hub import GAP, Outgoing, Subscription, control
from emp_web.sockets import (
    CLOSE_NORMAL,
    CLOSE_POLICY,
    guarded,
    serve,
    serve_job_socket,
    stream_id,
)

logger = logging.getLogger(__name__)

router = APIRouter()
# No event within ws_position_seconds: time to look at a pending job's place in line again.
_TICK = Outgoing("", "tick")


class SubscribeMessage(BaseModel):
    """What an admin socket sends to choose its events; a missing list means all."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(pattern="^subscribe$")
    services: list[Service] | None = Field(default=None, max_length=100)
    statuses: list[JobStatus] | None = None


class TicketOut(BaseModel):
    ticket: str
    expires_in: int = Field(description="Seconds the ticket stays good for (one socket).")


@router.post("/api/ws-tickets", tags=["jobs"], summary="A single-use ticket for one WebSocket")
async def ws_ticket(request: Request, _principal: PrincipalDep, services: ServicesDep) -> TicketOut:
    """For browsers, which cannot send headers with a WebSocket: open
    `/ws/jobs/{id}?ticket=…` (or `/ws/events?ticket=…`) within `expires_in` seconds; the ticket
    opens one socket, as the token that asked for it, and nothing after that."""
    token = bearer(request) or ""
    ttl = tickets.TICKET_SECONDS
    ticket = await tickets.issue(services.redis, services.queue.keys, hash_token(token), ttl=ttl)
    return TicketOut(ticket=ticket, expires_in=ttl)


async def _refuse(websocket: WebSocket, exc: EmpError) -> None:
    # INFO, not ERROR: anyone can knock, and the error log is for the server's own faults.
    logger.info("refused a socket on %s: %s", websocket.url.path, exc.message)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(
            error_response(exc.status_code, exc.code, exc.message, exc.field)
        )
    else:
        await websocket.close(CLOSE_POLICY, exc.message[:120])


async def _admit(websocket: WebSocket, services: Services) -> Principal | None:
    """The caller, or None after refusing the socket (before accepting it)."""
    try:
        return await socket_principal(websocket)
    except EmpError as exc:
        await _refuse(websocket, exc)
        return None


def _final_event(job: Job) -> str:
    """A terminal event rebuilt from the job's record, for a job whose stream has expired."""
    return JobEvent(
        event_id="",
        job_id=job.id,
        type=EventType(job.status.value),
        status=job.status.value,
        at=job.finished_at or datetime.now(UTC),
        service=job.service,
        attempt=job.attempts,
        worker_id=job.worker_id,
        progress=job.progress,
        error=job.error,
    ).model_dump_json()


class _JobFeed:
    """Sends one job's events to one socket, each once, in stream order."""

    def __init__(
        self,
        websocket: WebSocket,
        services: Services,
        job_id: str,
        viewer: Principal,
        *,
        with_position: bool = False,
    ) -> None:
        self.websocket = websocket
        self.services = services
        self.job_id = job_id
        self.viewer = viewer
        self.last = (0, 0)
        self.with_position = with_position
        self.status: str | None = None  # the job's status as last seen (for the position)
        self.position_sent = ""
        self._queue: Queue | None = None  # the queue holding the job, found on first replay

    async def _send_position(self) -> None:
        """The place in line, when it is new: only while the job is pending."""
        reader = ForensicsReader(self.services.catalog)
        place = await reader.position(self.job_id, self.viewer)
        body = orjson.dumps({"type": "position", **place.model_dump(mode="json")}).decode()
        if body != self.position_sent:
            self.position_sent = body
            await self.websocket.send_text(body)

    async def _next(self, sub: Subscription) -> Outgoing | None:
        """The next message for the socket; ``_TICK`` when a pending job's place is due a look."""
        if not (self.with_position and self.status == JobStatus.PENDING.value):
            return await sub.get()
        try:
            return await asyncio.wait_for(sub.get(), self.services.settings.ws_position_seconds)
        except TimeoutError:
            return _TICK

    async def _send(self, text: str, event_id: str, terminal: bool) -> bool:
        """Send unless already sent; True once the terminal event is out."""
        event_key = stream_id(event_id)
        if event_key <= self.last:
            return False
        self.last = event_key
        await self.websocket.send_text(text)
        return terminal

    async def _replay(self) -> bool:
        after = "-" if self.last == (0, 0) else f"{self.last[0]}-{self.last[1]}"
        if self._queue is None:
            self._queue = await self.services.queues.holding(self.job_id)
        q = self._queue
        for event in await replay(q.redis, q.keys, self.job_id, after=after):
            self.status = event.status
            if await self._send(event.model_dump_json(), event.event_id, event.is_terminal):
                return True
        return False

    async def run(self, sub: Subscription) -> None:
        if await self._replay() or await self._ended_without_stream():
            await self.websocket.close(CLOSE_NORMAL)
            return
        if self.with_position and self.status == JobStatus.PENDING.value:
            await self._send_position()
        while True:
            item = await self._next(sub)
            if item is _TICK:
                await self._send_position()
                continue
            if item is None:  # too slow, or the token was revoked
                await self.websocket.close(*sub.farewell)
                return
            self.status = item.status or self.status
            if item is GAP:  # the feed reconnected: fill the gap from the stream
                if await self._replay():
                    break
                continue
            if await self._send(item.text, item.event_id or "", item.kind == "terminal"):
                break
        await self.websocket.close(CLOSE_NORMAL)

    async def _ended_without_stream(self) -> bool:
        """Whether the job has ended, its terminal event sent. A job can end with no terminal
        event left in its stream (a dead-lettered job keeps its record longer than its stream,
        an archived one is only in SQL): its final state is then rebuilt from the record."""
        job = await self.services.catalog.get(self.job_id, self.viewer)
        self.status = job.status.value
        if not job.is_terminal:
            return False
        if await self._replay():  # it ended since the first replay: the event is in the stream
            return True
        await self.websocket.send_text(_final_event(job))
        return True


@router.websocket("/ws/jobs/{job_id}")
@guarded
async def job_events(websocket: WebSocket, job_id: str) -> None:
    """Replay the job's events, follow them live, close with 1000 after the terminal one."""
    services: Services = websocket.app.state.services
    with_position = websocket.query_params.get("position") in {"1", "true"}
    await serve_job_socket(
        websocket,
        services,
        job_id,
        admit=lambda: _admit(websocket, services),
        refuse=lambda exc: _refuse(websocket, exc),
        feed=lambda viewer, sub: _JobFeed(
            websocket, services, job_id, viewer, with_position=with_position
        ).run(sub),
    )


async def _send_all(websocket: WebSocket, sub: Subscription) -> None:
    while (item := await sub.get()) is not None:
        await websocket.send_text(item.text)
    await websocket.close(*sub.farewell)


async def _subscriptions(websocket: WebSocket, sub: Subscription) -> None:
    """Read the admin's subscribe messages; answers travel behind the queued events."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        try:
            raw = message.get("text") or message.get("bytes") or b""
            request = SubscribeMessage.model_validate(orjson.loads(raw))
        except orjson.JSONDecodeError:
            error = InvalidInput("the message is not JSON")
            sub.push(control({"type": "error", "error": error.to_dict()}))
            continue
        except ValidationError as exc:
            error = invalid_from_validation(exc)
            sub.push(control({"type": "error", "error": error.to_dict()}))
            continue
        statuses = None if request.statuses is None else [s.value for s in request.statuses]
        sub.set_filter(request.services, statuses)
        sub.push(
            control({"type": "subscribed", "services": request.services, "statuses": statuses})
        )


@router.websocket("/ws/events")
@guarded
async def all_events(websocket: WebSocket) -> None:
    """Admins: every event of the queue. Send `{"type": "subscribe", "services": [...],
    "statuses": [...]}` to narrow it; the server answers `{"type": "subscribed", ...}`."""
    services: Services = websocket.app.state.services
    principal = await _admit(websocket, services)
    if principal is None:
        return
    if not principal.is_admin:
        await _refuse(websocket, Forbidden("/ws/events needs an admin token"))
        return
    sub = services.hub.follow_all(principal)
    try:
        await websocket.accept()
        await serve(_send_all(websocket, sub), _subscriptions(websocket, sub))
    finally:
        services.hub.leave(sub)
