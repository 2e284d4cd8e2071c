"""Admin routes: the live workers, the state of the queue and the customers' fair-share weights."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from emp_api.deps import AdminDep, ServicesDep
from emp_api.schemas import ERRORS, ErrorResponse, QueueOut, ServiceDepth, WorkerOut
from emp_core.queue.backlog import backlogs
from emp_core.queue.fairness import WEIGHT_MAX, WEIGHT_MIN, FairShares
from emp_core.registry.machines import (
    MachineCommand,
    MachineStatus,
    list_machines,
    send_command,
)

router = APIRouter(
    prefix="/api",
    tags=["admin"],
    responses={**ERRORS, 403: {"model": ErrorResponse, "description": "Not an admin"}},
)


@router.get("/workers", summary="Live workers")
async def list_workers(_admin: AdminDep, services: ServicesDep) -> list[WorkerOut]:
    """Every registered worker whose registration has not expired, most recently seen first."""
    return [
        WorkerOut(
            id=info.worker_id,
            machine=info.machine_id,
            services=info.services,
            capabilities=info.capabilities.model_dump(mode="json", exclude={"worker_id"}),
            state=info.state,
            current_job=info.job_id,
            last_seen=info.last_seen,
        )
        for info in await services.workers.live()
    ]


@router.get("/queue", summary="Queue depth per service, and workers idle and busy")
async def queue_state(_admin: AdminDep, services: ServicesDep) -> QueueOut:
    depths = await backlogs(services.queues)
    workers = await services.workers.live()
    busy = sum(1 for w in workers if w.state == "busy")
    return QueueOut(
        queue=services.queue.settings.queue,
        services=[
            ServiceDepth(
                service=d.service, pending=d.pending, oldest_pending_age_s=d.oldest_pending_age_s
            )
            for d in depths
        ],
        workers_idle=sum(1 for w in workers if w.state == "idle"),
        workers_busy=busy,
    )


@router.get("/machines", summary="Machines and their workers")
async def machines(_admin: AdminDep, services: ServicesDep) -> list[MachineStatus]:
    """Every machine that reported in the last 10 minutes, most recent first; one silent for
    more than 30 s reads as `lost`. Each has its workers with state, pid, GPU and restarts."""
    return await list_machines(services.queue.redis, services.queue.keys)


class CommandSent(BaseModel):
    command_id: str
    listeners: int = Field(description="Connections that heard it now (0: the machine is away).")


@router.post("/machines/{machine_id}/commands", status_code=202, summary="Command a machine")
async def command_machine(
    machine_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")],
    command: MachineCommand,
    _admin: AdminDep,
    services: ServicesDep,
) -> CommandSent:
    """Drain a machine or restart one of its workers: published to the machine's command
    stream (gRPC `MachineService.WatchCommands`). Not queued: a machine away now misses it."""
    q = services.queue
    listeners = await send_command(q.redis, q.keys, machine_id, command)
    return CommandSent(command_id=command.command_id, listeners=listeners)


# --- fair shares between customers (issue 10): the weights the claim reads -------------------

CustomerPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]


class WeightIn(BaseModel):
    weight: float = Field(
        ge=WEIGHT_MIN,
        le=WEIGHT_MAX,
        allow_inf_nan=False,
        description="The customer's share relative to others' (default 1).",
    )


class WeightOut(BaseModel):
    customer_id: str
    weight: float


@router.get("/fair-shares", summary="Customers' fair-share weights")
async def fair_share_weights(_admin: AdminDep, services: ServicesDep) -> list[WeightOut]:
    """The weights set; every customer not listed has weight 1 (equal shares)."""
    weights = await FairShares(services.queue.redis, services.queue.keys).weights()
    return [WeightOut(customer_id=c, weight=w) for c, w in sorted(weights.items())]


@router.put("/fair-shares/{customer_id}", summary="Set a customer's fair-share weight")
async def set_fair_share(
    customer_id: CustomerPath, body: WeightIn, _admin: AdminDep, services: ServicesDep
) -> WeightOut:
    """Within a priority, a customer with weight 3 gets three claims for one of a customer with
    weight 1 while both have jobs waiting; from the next claim on."""
    await FairShares(services.queue.redis, services.queue.keys).set_weight(customer_id, body.weight)
    return WeightOut(customer_id=customer_id, weight=body.weight)


@router.delete("/fair-shares/{customer_id}", status_code=204, summary="Reset a weight to 1")
async def reset_fair_share(
    customer_id: CustomerPath, _admin: AdminDep, services: ServicesDep
) -> None:
    await FairShares(services.queue.redis, services.queue.keys).reset_weight(customer_id)
