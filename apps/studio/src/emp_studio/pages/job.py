"""One job: its live progress, its history, its result or error, and a cancel button while it
can still be cancelled.

The page of an unfinished job opens ``/ws/jobs/{id}``. The socket subscribes to the hub first,
then reads the job and sends every part of the page (``_job_live.html``: status, progress,
actions, facts, timeline, outcome), so nothing that happens between the page and the socket is
missed. After that a progress event sends the status and the progress bar; any other event
re-reads the job and sends every part again; the terminal event is followed by a close (1000),
after which the ws extension does not reconnect. Each fragment carries its id and the extension
swaps it in place (out of band). A finished job's page opens no socket.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import Response

from emp_core.errors import EmpError
from emp_core.jobs.events import JobEvent, replay
from emp_core.jobs.job import Job, JobStatus
from emp_core.jobs.waiting import explain
from emp_core.queue.position import QueuePosition, position
from emp_sql.auth import Principal
from emp_sql.users import UserRepository
from emp_studio import timeline
from emp_studio.deps import ServicesDep, ViewerDep, verify_csrf
from emp_studio.live import admit
from emp_studio.live import refuse as refuse_socket
from emp_studio.pages.outputs import studio_result
from emp_studio.render import fragment, is_htmx, page, redirect
from emp_studio.results import present
from emp_studio.state import Services
from emp_web.hub import GAP, Outgoing, Subscription
from emp_web.sockets import CLOSE_NORMAL, guarded, serve_job_socket, stream_id

logger = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(verify_csrf)])
sockets = APIRouter()
# No event within position_refresh_seconds: time to look at the place in line again.
_TICK = Outgoing("", "tick")


async def _load(services: Services, job_id: str, viewer: Principal) -> tuple[Job, list[JobEvent]]:
    """The job (``NotFound`` unless the viewer may see it) and its stored events."""
    job = await services.catalog.get(job_id, viewer)
    queue = await services.queues.holding(job_id)
    return job, await replay(queue.redis, queue.keys, job_id)


async def place_in_line(services: Services, job: Job) -> QueuePosition | None:
    """A pending job's place in line (bounded work, see ``emp_core.queue.position``); None for a
    job that is not waiting in line."""
    if job.status != JobStatus.PENDING:
        return None
    return await position(services.queue, job)


def job_context(
    job: Job, events: list[JobEvent], place: QueuePosition | None = None
) -> dict[str, Any]:
    """What the parts of the job page show."""
    return {
        "job": job,
        "position": place,
        "timeline": timeline.entries(events) or timeline.from_record(job),
        "failures": timeline.failed_attempts(events),
        "result": present(studio_result(job)),
        "live": not job.is_terminal,
        "now": datetime.now(UTC),
        # The newest preview image a running job sent (diffusers, comfyui): shown until it ends.
        "preview": None
        if job.is_terminal
        else next((e.preview for e in reversed(events) if e.preview), None),
    }


@router.get("/jobs/{job_id}")
async def job_page(
    request: Request, job_id: str, viewer: ViewerDep, services: ServicesDep
) -> Response:
    job, events = await _load(services, job_id, viewer)
    owner = None
    if viewer.is_admin and job.customer_id and job.customer_id != viewer.user_id:
        async with services.database.session() as db:
            owner = await UserRepository(db).by_id(job.customer_id)
    waiting = None
    if job.status in (JobStatus.PENDING, JobStatus.RETRYING):
        live = await services.workers.live()
        waiting = explain(job, [w.capabilities for w in live if w.state != "draining"])
    context = {
        **job_context(job, events, await place_in_line(services, job)),
        "waiting": waiting,
        "nav": "jobs",
        "owner": owner.email if owner else None,
        "payload": present(job.payload),
        "requirements": job.requirements.canonical(),
    }
    return page(request, "job.html", context)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(
    request: Request, job_id: str, viewer: ViewerDep, services: ServicesDep
) -> Response:
    job = await services.catalog.cancel(job_id, viewer)
    logger.info("user %s cancelled job %s", viewer.email, job_id)
    if is_htmx(request):
        # The page's parts, out of band: the page shows the cancel even when its socket is down.
        _, events = await _load(services, job_id, viewer)
        return page(request, "_job_live.html", {**job_context(job, events), "oob": True})
    return redirect(request, f"/jobs/{job_id}")


class _Feed:
    """Sends one job's page parts to one socket as its events arrive."""

    def __init__(
        self,
        websocket: WebSocket,
        services: Services,
        viewer: Principal,
        job_id: str,
        sub: Subscription,
    ) -> None:
        self.websocket = websocket
        self.services = services
        self.viewer = viewer
        self.job_id = job_id
        self.sub = sub
        self.job: Job | None = None
        self.last = (0, 0)  # the newest stream id the parts sent so far reflect
        self.position_html = ""  # the place in line as last sent

    async def _send_all(self) -> bool:
        """Send every part, read afresh; True once the job has ended.

        The stream is read *before* the job: the job is then at least as new as the last event
        read, which is what ``last`` records. Read the other way round, an event appended
        between the two reads would count as shown while the job read before it was not
        terminal, and the socket would wait for ever for an end it had skipped."""
        queue = await self.services.queues.holding(self.job_id)
        events = await replay(queue.redis, queue.keys, self.job_id)
        job = await self.services.catalog.get(self.job_id, self.viewer)
        self.job = job
        if events:
            self.last = max(self.last, stream_id(events[-1].event_id))
        place = await place_in_line(self.services, job)
        self.position_html = fragment("_job_position.html", {"job": job, "position": place})
        await self.websocket.send_text(fragment("_job_live.html", job_context(job, events, place)))
        return job.is_terminal

    async def _send_position(self) -> None:
        """The place in line again (others' jobs were claimed, cancelled, or submitted ahead):
        sent only when it changed."""
        if self.job is None:
            return
        place = await place_in_line(self.services, self.job)
        html = fragment("_job_position.html", {"job": self.job, "position": place})
        if html != self.position_html:
            self.position_html = html
            await self.websocket.send_text(html)

    async def _next(self) -> Outgoing | None:
        """The next event of this job; while it waits in line, ``_TICK`` when none came within
        ``position_refresh_seconds`` (its place moves with other jobs' events, not its own)."""
        if self.job is None or self.job.status != JobStatus.PENDING:
            return await self.sub.get()
        try:
            return await asyncio.wait_for(
                self.sub.get(), self.services.settings.position_refresh_seconds
            )
        except TimeoutError:
            return _TICK

    async def _send_progress(self, event: JobEvent) -> None:
        event_key = stream_id(event.event_id)
        if self.job is None or event_key <= self.last:
            return  # already reflected by the last full render
        self.last = event_key
        self.job = self.job.model_copy(
            update={"status": event.status, "progress": event.progress, "message": event.message}
        )
        await self.websocket.send_text(fragment("_job_progress.html", {"job": self.job}))
        if event.preview:
            await self.websocket.send_text(
                fragment("_job_preview.html", {"preview": event.preview})
            )

    async def run(self) -> None:
        if await self._send_all():
            await self.websocket.close(CLOSE_NORMAL)
            return
        while True:
            item = await self._next()
            if item is _TICK:
                await self._send_position()
                continue
            if item is None:  # too slow (the browser reconnects and starts afresh) or signed out
                await self.websocket.close(*self.sub.farewell)
                return
            if item is not GAP and item.kind == "progress":
                await self._send_progress(JobEvent.model_validate_json(item.text))
            elif (item is GAP or stream_id(item.event_id or "") > self.last) and (
                await self._send_all()
            ):
                await self.websocket.close(CLOSE_NORMAL)
                return


@sockets.websocket("/ws/jobs/{job_id}")
@guarded
async def job_socket(websocket: WebSocket, job_id: str) -> None:
    services: Services = websocket.app.state.services

    async def refuse(exc: EmpError) -> None:
        await refuse_socket(websocket, exc.message)

    await serve_job_socket(
        websocket,
        services,
        job_id,
        admit=lambda: admit(websocket, services),
        refuse=refuse,
        feed=lambda viewer, sub: _Feed(websocket, services, viewer, job_id, sub).run(),
    )
