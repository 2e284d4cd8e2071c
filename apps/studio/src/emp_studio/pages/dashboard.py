"""The dashboard: queue depth per service, charts of the last hour, the workers, and the machines;
live over WebSocket.

The socket re-renders ``_dashboard_live.html`` and sends it whole (the ws extension swaps it in
by id): when job events arrive, at most once per ``dashboard_min_interval_seconds``, and at
least every ``dashboard_idle_seconds``, because a worker that goes quiet publishes nothing. A
render equal to the last one sent is not sent again.

Everyone signed in sees the queue and the workers (what a job may ask for); which job a worker is
running, and the machines, are for admins.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import Response

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.backlog import backlogs
from emp_core.queue.stats import History, history, merged, server_ms
from emp_core.registry.machines import list_machines
from emp_sql.auth import Principal
from emp_studio.deps import ServicesDep, ViewerDep, verify_csrf
from emp_studio.hourcharts import hour_charts
from emp_studio.live import admit
from emp_studio.render import fragment, page
from emp_studio.state import Services
from emp_web.hub import Subscription
from emp_web.sockets import guarded, serve_feed

router = APIRouter(dependencies=[Depends(verify_csrf)])
sockets = APIRouter()


def _leaves(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def capability_chips(caps: WorkerCapabilities) -> list[str]:
    """What a worker offers beyond its services, as short labels: ``24 GB GPU``, ``sd15``."""
    hw = caps.hardware
    chips = [f"{hw.gpu_memory_gb:g} GB GPU"] if hw.gpu_memory_gb else []
    chips += [f"{hw.cpu_cores} CPU cores"] if hw.cpu_cores else []
    chips += [f"{hw.ram_gb:g} GB RAM"] if hw.ram_gb else []
    chips += [model for models in caps.models.values() for model in models]
    chips += [f"{caps.customer_isolation} isolation"] if caps.customer_isolation != "none" else []
    chips += [f"workflow {caps.workflow_id}"] if caps.workflow_id else []
    for path, value in _leaves(caps.capabilities):
        shown = value if isinstance(value, str) else ", ".join(map(str, value)) if isinstance(
            value, list
        ) else str(value).lower()  # fmt: skip
        chips.append(path if value is True else f"{path} = {shown}")
    return chips


async def dashboard_context(services: Services, viewer: Principal) -> dict[str, Any]:
    """Everything the live part of the dashboard shows, read now."""
    queue = services.queue
    depths, workers, last_hour = await asyncio.gather(
        backlogs(services.queues), services.workers.live(), _last_hour(services)
    )
    machines = await list_machines(services.redis, queue.keys) if viewer.is_admin else []
    busy = sum(1 for w in workers if w.state == "busy")
    return {
        "viewer": viewer,
        "depths": depths,
        "pending": sum(d.pending for d in depths),
        "workers": sorted(workers, key=lambda w: w.worker_id),
        "busy": busy,
        "idle": sum(1 for w in workers if w.state == "idle"),
        "machines": machines,
        "chips": {w.worker_id: capability_chips(w.capabilities) for w in workers},
        "now": datetime.now(UTC),
        "charts": hour_charts(last_hour),
    }


async def _last_hour(services: Services) -> History:
    """The last 60 minutes of counters over every queue: Redis's clock, then one pipeline of 60
    HGETALL per queue, whatever the number of jobs."""
    redis = services.redis
    now_ms = await server_ms(redis)
    return merged([await history(redis, q.keys, now_ms=now_ms) for q in services.queues])


@router.get("/")
async def dashboard(request: Request, viewer: ViewerDep, services: ServicesDep) -> Response:
    context = await dashboard_context(services, viewer)
    return page(request, "dashboard.html", {**context, "nav": "dashboard"})


async def _drain(sub: Subscription, wait_s: float) -> bool:
    """Wait up to ``wait_s`` for an event, then take every one waiting; False when the
    subscription fell too far behind and is of no more use."""
    with contextlib.suppress(TimeoutError):
        item = await asyncio.wait_for(sub.get(), wait_s)
        if item is None:
            return False
        while len(sub):
            if await sub.get() is None:
                return False
    return True


async def _feed(websocket: WebSocket, services: Services, viewer: Principal) -> None:
    settings = services.settings
    last_html = ""
    sub = services.hub.follow_all(viewer)
    try:
        while True:
            started = time.monotonic()
            html = fragment("_dashboard_live.html", await dashboard_context(services, viewer))
            if html != last_html:
                await websocket.send_text(html)
                last_html = html
            # Events during the pause are taken together by the next drain: one render for many.
            pause = settings.dashboard_min_interval_seconds - (time.monotonic() - started)
            await asyncio.sleep(max(0.0, pause))
            if not await _drain(sub, settings.dashboard_idle_seconds):
                if sub.ended is not None:  # signed out, or the user disabled
                    await websocket.close(*sub.farewell)
                    return
                services.hub.leave(sub)
                sub = services.hub.follow_all(viewer)
    finally:
        services.hub.leave(sub)


@sockets.websocket("/ws/dashboard")
@guarded
async def dashboard_socket(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    viewer = await admit(websocket, services)
    if viewer is None:
        return
    await websocket.accept()
    await serve_feed(websocket, _feed(websocket, services, viewer))
