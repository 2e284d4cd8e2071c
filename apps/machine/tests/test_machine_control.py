"""Machine control through the supervisor's command channel (issue 17), on a real ``emp-machine``
with real ``emp-worker`` children: the log tail, restarting one worker and all, draining, and a
machine that does not answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from machine_helpers import Machines, eventually, machine_env, machines_in, wait_exit

from emp_core.queue.queue import Queue
from emp_core.registry.control import command_and_wait
from emp_core.registry.machines import (
    CommandType,
    MachineCommand,
    MachineState,
    SlotState,
    get_machine,
)
from emp_core.registry.workers import WorkerRegistry
from emp_core.settings import QueueSettings


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Machines]:
    with machines_in(tmp_path / "logs") as started:
        yield started


async def _send(queue: Queue, machine_id: str, **command: object) -> object:
    return await command_and_wait(
        queue.redis, queue.keys, machine_id, MachineCommand.model_validate(command),
        timeout_s=10,
    )  # fmt: skip


async def test_logs_restart_and_drain_of_a_running_machine(
    queue: Queue, redis: aioredis.Redis, settings: QueueSettings, machines: Machines
) -> None:
    env = machine_env(settings, EMP_MACHINE_ID="mc", EMP_WORKERS="simulation:2")
    machine = machines.start(env)
    ids = {"mc-simulation-0", "mc-simulation-1"}

    async def registered() -> bool:
        live = {w.worker_id for w in await WorkerRegistry(redis, queue.keys).live()}
        return ids <= live

    await eventually(registered, within=30)

    logs = await _send(queue, "mc", type="logs", worker_id="mc-simulation-0", lines=50)
    assert logs is not None, machines.log()
    assert logs.ok  # type: ignore[attr-defined]
    assert 0 < len(logs.lines) <= 50  # type: ignore[attr-defined]
    assert "mc-simulation-0" in machines.log()  # still copied to the machine's own log

    missing = await _send(queue, "mc", type="restart_worker", worker_id="nope")
    assert missing is not None
    assert not missing.ok  # type: ignore[attr-defined]

    before = await get_machine(redis, queue.keys, "mc")
    assert before is not None
    restarted = await _send(queue, "mc", type="restart_worker", worker_id="mc-simulation-1")
    assert restarted is not None
    assert restarted.ok  # type: ignore[attr-defined]

    async def came_back() -> bool:
        now = await get_machine(redis, queue.keys, "mc")
        w = now.workers[1] if now else None
        return bool(w and w.restarts == 1 and w.state == SlotState.RUNNING and w.pid)

    await eventually(came_back, within=30)
    everyone = await _send(queue, "mc", type="restart_all")
    assert everyone is not None
    assert sorted(everyone.lines) == sorted(ids)  # type: ignore[attr-defined]

    async def all_back() -> bool:
        now = await get_machine(redis, queue.keys, "mc")
        return bool(now) and all(
            w.state == SlotState.RUNNING and w.restarts >= 1
            for w in now.workers  # type: ignore[union-attr]
        )

    await eventually(all_back, within=30)
    drained = await _send(queue, "mc", type="drain")
    assert drained is not None
    assert drained.ok  # type: ignore[attr-defined]
    assert await wait_exit(machine, within=40) == 0
    final = await get_machine(redis, queue.keys, "mc")
    assert final is not None
    assert final.state == MachineState.STOPPED


async def test_a_machine_that_does_not_answer(queue: Queue) -> None:
    assert await _send(queue, "nobody-home", type=CommandType.DRAIN.value) is None
