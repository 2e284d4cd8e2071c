"""``emp-machine`` as a real process with real ``emp-worker`` children on the test's Redis:
identities and GPUs, a killed worker restarted, SIGTERM draining, a SIGKILLed machine lost and
its job completed elsewhere."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from machine_helpers import Machines, eventually, machine_env, machines_in, proc_environ, wait_exit

from emp_core.jobs.job import JobStatus
from emp_core.queue.queue import Queue
from emp_core.registry.machines import (
    MachineState,
    MachineStatus,
    SlotState,
    get_machine,
    list_machines,
)
from emp_core.registry.workers import WorkerRegistry
from emp_core.settings import QueueSettings


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Machines]:
    with machines_in(tmp_path / "logs") as started:
        yield started


async def _status(redis: aioredis.Redis, queue: Queue, machine_id: str) -> MachineStatus | None:
    return await get_machine(redis, queue.keys, machine_id)


async def _registered(redis: aioredis.Redis, queue: Queue, worker_ids: set[str]) -> dict[str, int]:
    """Worker id -> pid of the given workers registered now (all of them, or an empty dict)."""
    live = {w.worker_id: w.pid for w in await WorkerRegistry(redis, queue.keys).live()}
    return live if worker_ids <= set(live) else {}


async def test_workers_start_with_their_ids_and_gpus_and_a_killed_one_restarts(
    queue: Queue, redis: aioredis.Redis, settings: QueueSettings, machines: Machines
) -> None:
    env = machine_env(settings, EMP_MACHINE_ID="m1", EMP_GPUS="2", EMP_WORKERS="simulation:2")
    machine = machines.start(env)
    ids = {"m1-simulation-0", "m1-simulation-1"}

    async def all_registered() -> bool:
        return bool(await _registered(redis, queue, ids))

    await eventually(all_registered, within=25)
    status = await _status(redis, queue, "m1")
    assert status is not None, machines.log()
    assert status.state == MachineState.RUNNING
    assert status.gpus == 2
    assert [(w.worker_id, w.gpu, w.state) for w in status.workers] == [
        ("m1-simulation-0", 0, SlotState.RUNNING),
        ("m1-simulation-1", 1, SlotState.RUNNING),
    ]
    for w in status.workers:
        assert w.pid is not None
        child = proc_environ(w.pid)
        assert child["EMP_WORKER_ID"] == w.worker_id
        assert child["CUDA_VISIBLE_DEVICES"] == str(w.gpu)
        assert (child["EMP_MACHINE_ID"], child["EMP_SERVICES"]) == ("m1", "simulation")
    infos = {i.worker_id: i for i in await WorkerRegistry(redis, queue.keys).live()}
    assert {infos[i].machine_id for i in ids} == {"m1"}
    assert os.getpgid(status.workers[0].pid) == machine.pid  # one process group

    victim = status.workers[0]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)

    async def restarted() -> bool:
        now = await _status(redis, queue, "m1")
        w = now.workers[0] if now else None
        if w is None or w.restarts != 1 or w.state != SlotState.RUNNING:
            return False
        pids = await _registered(redis, queue, {victim.worker_id})
        return pids.get(victim.worker_id) == w.pid != victim.pid

    await eventually(restarted, within=25)
    status = await _status(redis, queue, "m1")
    assert status is not None
    assert status.workers[0].last_exit_code == -signal.SIGKILL
    assert status.workers[1].restarts == 0
    assert "worker m1-simulation-0 was killed by SIGKILL" in machines.log()

    machine.send_signal(signal.SIGTERM)
    assert await wait_exit(machine) == 0, machines.log()


async def test_sigterm_drains_the_running_job_back_to_the_queue(
    queue: Queue, redis: aioredis.Redis, settings: QueueSettings, machines: Machines
) -> None:
    env = machine_env(
        settings, EMP_MACHINE_ID="md", EMP_WORKERS="simulation:1", EMP_GRACE_SECONDS="0.5"
    )
    machine = machines.start(env)
    job_id = await queue.submit({"service": "simulation", "payload": {"steps": 200}})  # 10 s

    async def running() -> bool:
        return (await queue.get(job_id)).status == JobStatus.RUNNING

    await eventually(running, within=25)
    machine.send_signal(signal.SIGTERM)  # the machine alone: it forwards to its workers
    assert await wait_exit(machine, within=15) == 0, machines.log()

    job = await queue.get(job_id)
    assert job.status == JobStatus.PENDING, machines.log()  # handed back, not failed
    assert job.error is None
    assert await queue.depth() == {"simulation": 1}
    status = await _status(redis, queue, "md")
    assert status is not None
    assert status.state == MachineState.STOPPED
    assert [w.state for w in status.workers] == [SlotState.STOPPED]
    assert status.workers[0].last_exit_code == 0
    assert await WorkerRegistry(redis, queue.keys).live() == []  # deregistered
    assert "handed back to the queue" in machines.log()


async def test_a_killed_machine_is_lost_and_its_job_completes_elsewhere(
    queue: Queue, redis: aioredis.Redis, settings: QueueSettings, machines: Machines
) -> None:
    common = {"EMP_WORKERS": "simulation:1", "EMP_LEASE_SECONDS": "1"}
    first = machines.start(machine_env(settings, EMP_MACHINE_ID="ma", **common), name="ma")
    job_id = await queue.submit({"service": "simulation", "payload": {"steps": 30}})  # 1.5 s

    async def running_on_ma() -> bool:
        job = await queue.get(job_id)
        return job.status == JobStatus.RUNNING and job.worker_id == "ma-simulation-0"

    await eventually(running_on_ma, within=25)
    (before,) = await list_machines(redis, queue.keys, lost_after_s=1)
    assert before.state == MachineState.RUNNING

    os.killpg(first.pid, signal.SIGKILL)  # the machine and its worker, mid-job
    killed = time.monotonic()
    await wait_exit(first)

    async def lost() -> bool:
        (ma,) = await list_machines(redis, queue.keys, lost_after_s=1)
        return ma.state == MachineState.LOST

    await eventually(lost, within=10)
    lost_after = time.monotonic() - killed

    second = machines.start(
        machine_env(settings, EMP_MACHINE_ID="mb", EMP_REAP_INTERVAL_SECONDS="0.2", **common),
        name="mb",
    )

    async def completed() -> bool:
        return (await queue.get(job_id)).status == JobStatus.COMPLETED

    await eventually(completed, within=25)
    recovered_after = time.monotonic() - killed
    job = await queue.get(job_id)
    assert job.worker_id == "mb-simulation-0", machines.log("mb")
    assert (job.attempts, job.lost_leases) == (1, 1)  # the lost lease spent no attempt
    print(
        f"machine lost after {lost_after:.1f} s; its job completed elsewhere "
        f"{recovered_after:.1f} s after the kill"
    )
    # With the default threshold (30 s) the killed machine does not read as lost yet.
    states = {m.machine_id: m.state for m in await list_machines(redis, queue.keys)}
    assert states == {"ma": MachineState.RUNNING, "mb": MachineState.RUNNING}
    second.send_signal(signal.SIGTERM)
    assert await wait_exit(second) == 0
