"""MachineService against a real server: a machine registers and reports over gRPC and is listed
like any other; a command sent over REST reaches its command stream; admins only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from api_helpers import Api, running_api

from emp.v1 import machine_pb2, machine_pb2_grpc
from emp_core.settings import QueueSettings
from emp_rpc.metadata import bearer
from emp_web.testing import Account


@pytest.fixture
async def api(settings: QueueSettings, database_url: str) -> AsyncIterator[Api]:
    async with running_api(settings, database_url, grpc_port=0) as running:
        yield running


@pytest.fixture
async def stub(api: Api) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api.app.state.grpc_port}") as channel:
        yield machine_pb2_grpc.MachineServiceStub(channel)


async def test_register_report_and_commands(
    api: Api, stub: Any, accounts: dict[str, Account]
) -> None:
    admin = accounts["admin"]
    me = bearer(admin.token)
    slot = machine_pb2.WorkerSlot(worker_id="m1-sim-0", service="simulation", index=0,
                                  state="running", gpu=0)  # fmt: skip
    answer = await stub.Register(
        machine_pb2.RegisterRequest(machine_id="m1", hostname="h", gpus=1, workers=[slot]),
        metadata=me,
    )
    assert answer.report_interval_s > 0
    await stub.ReportStatus(
        machine_pb2.ReportStatusRequest(
            machine_id="m1", state=machine_pb2.MACHINE_STATE_RUNNING, workers=[slot]
        ),
        metadata=me,
    )
    listed = (await api.http.get("/api/machines", headers=admin.headers)).json()
    [m1] = [m for m in listed if m["machine_id"] == "m1"]
    assert (m1["state"], m1["workers"][0]["worker_id"]) == ("running", "m1-sim-0")

    stream = stub.WatchCommands(machine_pb2.WatchCommandsRequest(machine_id="m1"), metadata=me)
    sent: dict[str, Any] = {}
    for _ in range(200):  # until the stream has subscribed
        r = await api.http.post(
            "/api/machines/m1/commands", json={"type": "restart_worker", "worker_id": "m1-sim-0"},
            headers=admin.headers,
        )  # fmt: skip
        assert r.status_code == 202, r.text
        sent = r.json()
        if sent["listeners"]:
            break
        await asyncio.sleep(0.025)
    item = await asyncio.wait_for(stream.read(), 10)
    while item.command.command_id != sent["command_id"]:
        item = await asyncio.wait_for(stream.read(), 10)
    assert item.command.type == machine_pb2.COMMAND_TYPE_RESTART_WORKER
    assert item.command.worker_id == "m1-sim-0"
    stream.cancel()


async def test_admins_only_and_bad_input(api: Api, stub: Any, accounts: dict[str, Account]) -> None:
    user = bearer(accounts["alice"].token)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Register(machine_pb2.RegisterRequest(machine_id="m2"), metadata=user)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    admin = bearer(accounts["admin"].token)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Register(machine_pb2.RegisterRequest(), metadata=admin)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ReportStatus(
            machine_pb2.ReportStatusRequest(
                machine_id="never-registered", state=machine_pb2.MACHINE_STATE_RUNNING
            ),
            metadata=admin,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    r = await api.http.post(
        "/api/machines/m2/commands", json={"type": "drain"}, headers=accounts["alice"].headers
    )
    assert r.status_code == 403
    r = await api.http.post(
        "/api/machines/m2/commands", json={"type": "explode"}, headers=accounts["admin"].headers
    )
    assert r.status_code == 422
