"""Machines (admins): each machine supervisor's last report, its worker slots with their GPU,
state, restarts and last exit, and its live workers' registry entries.

A machine reports itself to Redis (``emp_core.registry.machines``); one that went quiet reads as
``lost`` until its status expires. Log tails are not kept anywhere yet, so none is shown.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response

from emp_core.registry.machines import list_machines
from emp_studio.deps import AdminDep, ServicesDep
from emp_studio.render import page

router = APIRouter()


@router.get("/admin/machines")
async def machines_page(request: Request, admin: AdminDep, services: ServicesDep) -> Response:
    machines = await list_machines(services.redis, services.queue.keys)
    live = {w.worker_id: w for w in await services.workers.live()}
    context = {
        "nav": "machines",
        "machines": machines,
        "live": live,
        "now": datetime.now(UTC),
    }
    return page(request, "machines.html", context)
