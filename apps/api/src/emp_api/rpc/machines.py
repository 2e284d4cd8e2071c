"""``emp.v1.MachineService``: a machine supervisor registers, reports its status and receives
commands (drain, restart a worker) over gRPC, for hosts that cannot reach Redis. Statuses land
in the same registry the Redis-connected supervisors write (``emp_core.registry.machines``), so
``GET /api/machines`` and the studio list both kinds alike; commands are published on the
machine's channel by ``POST /api/machines/{id}/commands`` and streamed here. Admin tokens only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from emp.v1 import machine_pb2, machine_pb2_grpc
from emp_api.rpc.errors import guarded, guarded_stream
from emp_api.state import Services
from emp_core.errors import InvalidInput, invalid_from_validation
from emp_core.redis.subscription import ShardSubscription
from emp_core.registry.machines import (
    CommandType,
    MachineCommand,
    MachineRegistry,
    MachineState,
    MachineStatus,
    MachineWorker,
    get_machine,
)
from emp_rpc.metadata import token_from

REPORT_INTERVAL_S = 10.0
_STATES = {
    machine_pb2.MACHINE_STATE_STARTING: MachineState.STARTING,
    machine_pb2.MACHINE_STATE_RUNNING: MachineState.RUNNING,
    machine_pb2.MACHINE_STATE_STOPPING: MachineState.STOPPING,
    machine_pb2.MACHINE_STATE_STOPPED: MachineState.STOPPED,
}
_COMMANDS = {
    CommandType.DRAIN: machine_pb2.COMMAND_TYPE_DRAIN,
    CommandType.RESTART_WORKER: machine_pb2.COMMAND_TYPE_RESTART_WORKER,
}


def _machine_id(value: str) -> str:
    if not value or len(value) > 128:
        raise InvalidInput("machine_id is required (at most 128 characters)", field="machine_id")
    return value


def _workers(slots: Any) -> list[MachineWorker]:
    try:
        return [
            MachineWorker.model_validate(
                {
                    "worker_id": s.worker_id,
                    "service": s.service,
                    "index": s.index,
                    "gpu": s.gpu if s.HasField("gpu") else None,
                    "state": s.state,
                    "restarts": s.restarts,
                }
            )
            for s in slots
        ]
    except ValidationError as exc:
        raise invalid_from_validation(exc, root="workers") from None


class MachineService(machine_pb2_grpc.MachineServiceServicer):  # type: ignore[misc]
    def __init__(self, services: Services) -> None:
        self.services = services
        self.registry = MachineRegistry(services.redis, services.queue.keys)

    async def _admin(self, context: Any) -> None:
        principal = await self.services.auth.authenticate(token_from(context.invocation_metadata()))
        principal.require_admin()

    async def Register(
        self, request: machine_pb2.RegisterRequest, context: Any
    ) -> machine_pb2.RegisterResponse:
        async def call() -> machine_pb2.RegisterResponse:
            await self._admin(context)
            now = datetime.now(UTC)
            await self.registry.report(
                MachineStatus(
                    machine_id=_machine_id(request.machine_id),
                    hostname=request.hostname,
                    version=request.version,
                    gpus=request.gpus,
                    state=MachineState.STARTING,
                    workers=_workers(request.workers),
                    started_at=now,
                    last_seen=now,
                )
            )
            return machine_pb2.RegisterResponse(report_interval_s=REPORT_INTERVAL_S)

        return await guarded(context, call)

    async def ReportStatus(
        self, request: machine_pb2.ReportStatusRequest, context: Any
    ) -> machine_pb2.ReportStatusResponse:
        async def call() -> machine_pb2.ReportStatusResponse:
            await self._admin(context)
            machine_id = _machine_id(request.machine_id)
            state = _STATES.get(request.state)
            if state is None:
                raise InvalidInput("state is required", field="state")
            q = self.services.queue
            known = await get_machine(q.redis, q.keys, machine_id)
            if known is None:
                raise InvalidInput("register the machine first", field="machine_id")
            update = {"state": state, "workers": _workers(request.workers),
                      "last_seen": datetime.now(UTC)}  # fmt: skip
            await self.registry.report(known.model_copy(update=update))
            return machine_pb2.ReportStatusResponse()

        return await guarded(context, call)

    async def WatchCommands(
        self, request: machine_pb2.WatchCommandsRequest, context: Any
    ) -> AsyncIterator[machine_pb2.WatchCommandsResponse]:
        async for command in guarded_stream(context, self._commands(request, context)):
            if command.type not in _COMMANDS:  # restart_all and logs are for the supervisor
                continue
            message = machine_pb2.Command(
                command_id=command.command_id, type=_COMMANDS[command.type]
            )
            if command.worker_id is not None:
                message.worker_id = command.worker_id
            yield machine_pb2.WatchCommandsResponse(command=message)

    async def _commands(
        self, request: machine_pb2.WatchCommandsRequest, context: Any
    ) -> AsyncIterator[MachineCommand]:
        await self._admin(context)
        channel = self.services.queue.keys.machine_commands(_machine_id(request.machine_id))
        subscription = ShardSubscription(self.services.redis, [channel])
        try:
            await subscription.open()
            async for message in subscription.listen():
                if message.get("type") == "smessage":
                    yield MachineCommand.model_validate_json(message["data"])
        finally:
            await subscription.aclose()
