"""One machine in the studio (admins, issue 17): its workers, and its controls: drain, restart a
worker or all, read a worker's last log lines. Commands go through the supervisor's control
channel; the answer (or that the machine did not answer) is shown on the page."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from emp_core.errors import NotFound
from emp_core.registry.machines import CommandType, MachineCommand, get_machine
from emp_sql.operations import Operations
from emp_studio.deps import AdminDep, ServicesDep, verify_csrf
from emp_studio.render import page
from emp_studio.state import Services

logger = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(verify_csrf)])


async def _page(
    request: Request, services: Services, machine_id: str, result: dict[str, Any] | None = None
) -> Response:
    machine = await get_machine(services.queue.redis, services.queue.keys, machine_id)
    if machine is None:
        raise NotFound(f"machine {machine_id} is not reporting", field="machine_id")
    return page(request, "machine.html", {"nav": "machines", "machine": machine, "result": result})


@router.get("/admin/machines/{machine_id}")
async def machine_page(
    request: Request, machine_id: str, admin: AdminDep, services: ServicesDep
) -> Response:
    return await _page(request, services, machine_id)


@router.post("/admin/machines/{machine_id}/control")
async def control(
    request: Request,
    machine_id: str,
    admin: AdminDep,
    services: ServicesDep,
    type: Annotated[CommandType, Form()],
    worker_id: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    command = MachineCommand(type=type, worker_id=worker_id or None, lines=200)
    answer = await Operations(services.queue, services.database).machine(admin, machine_id, command)
    logger.info("%s sent %s to machine %s", admin.email, type.value, machine_id)
    result = {
        "type": type.value,
        "worker_id": worker_id,
        "answered": answer is not None,
        "ok": bool(answer and answer.ok),
        "message": answer.message if answer else f"machine {machine_id} did not answer",
        "lines": answer.lines if answer and type == CommandType.LOGS else [],
    }
    return await _page(request, services, machine_id, result)
