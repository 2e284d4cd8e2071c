"""The machine registry: reports, listing, a quiet machine read as lost, expiry."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis

from emp_core.registry.machines import (
    MachineRegistry,
    MachineState,
    MachineStatus,
    MachineWorker,
    SlotState,
    get_machine,
    list_machines,
)
from emp_core.settings import QueueSettings


def make_status(
    *, machine_id: str = "m1", state: MachineState = MachineState.RUNNING, age_s: float = 0
) -> MachineStatus:
    now = datetime.now(UTC) - timedelta(seconds=age_s)
    return MachineStatus(
        machine_id=machine_id,
        hostname="host-a",
        pid=42,
        version="0.1.0",
        gpus=2,
        state=state,
        workers=[
            MachineWorker(
                worker_id=f"{machine_id}-simulation-{i}",
                service="simulation",
                index=i,
                gpu=i,
                state=SlotState.RUNNING,
                pid=100 + i,
                restarts=i,
                started_at=now,
            )
            for i in range(2)
        ],
        started_at=now - timedelta(seconds=90),
        last_seen=now,
    )


async def test_report_and_list(redis: aioredis.Redis, settings: QueueSettings) -> None:
    keys = settings.keys
    registry = MachineRegistry(redis, keys, ttl_s=60)
    assert await list_machines(redis, keys) == []
    await registry.report(make_status(machine_id="m1"))
    await registry.report(make_status(machine_id="m2"))
    machines = await list_machines(redis, keys)
    assert [m.machine_id for m in machines] == ["m2", "m1"]  # most recent report first
    m1 = machines[1]
    assert (m1.hostname, m1.pid, m1.version, m1.gpus, m1.state) == (
        "host-a", 42, "0.1.0", 2, MachineState.RUNNING
    )  # fmt: skip
    assert [w.worker_id for w in m1.workers] == ["m1-simulation-0", "m1-simulation-1"]
    assert m1.restarts == 1
    assert 89 < m1.uptime_s < 91
    assert m1.model_dump(mode="json")["uptime_s"] == m1.uptime_s  # the API shows it
    assert 0 < await redis.pttl(keys.machine("m1")) <= 60_000
    assert await get_machine(redis, keys, "m1") == m1
    assert await get_machine(redis, keys, "nope") is None


async def test_a_quiet_machine_reads_as_lost_but_a_stopped_one_does_not(
    redis: aioredis.Redis, settings: QueueSettings
) -> None:
    keys = settings.keys
    registry = MachineRegistry(redis, keys)
    await registry.report(make_status(machine_id="quiet", age_s=31))
    await registry.report(make_status(machine_id="fresh", age_s=5))
    await registry.report(make_status(machine_id="done", state=MachineState.STOPPED, age_s=300))
    states = {m.machine_id: m.state for m in await list_machines(redis, keys)}
    assert states == {"quiet": "lost", "fresh": "running", "done": "stopped"}
    later = datetime.now(UTC) + timedelta(seconds=30)
    states = {m.machine_id: m.state for m in await list_machines(redis, keys, now=later)}
    assert states["fresh"] == "lost"
    short = {m.machine_id: m.state for m in await list_machines(redis, keys, lost_after_s=2)}
    assert short["fresh"] == "lost"


async def test_an_expired_machine_leaves_the_index(
    redis: aioredis.Redis, settings: QueueSettings
) -> None:
    keys = settings.keys
    await MachineRegistry(redis, keys, ttl_s=0.05).report(make_status(machine_id="gone"))
    await MachineRegistry(redis, keys).report(make_status(machine_id="kept"))
    await asyncio.sleep(0.1)
    assert [m.machine_id for m in await list_machines(redis, keys)] == ["kept"]
    assert await redis.zrange(keys.machines(), 0, -1) == [b"kept"]
    await MachineRegistry(redis, keys).remove("kept")
    assert await list_machines(redis, keys) == []
