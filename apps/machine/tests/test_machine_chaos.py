"""The chaos test of issue 10: two machines of two workers each, one worker SIGKILLed every 3 s
for a minute, with the queue's default lease (10 s), reaper interval (5 s) and the machines'
default restart policy.

Every job must complete exactly once; every job a killed worker held must be re-queued by the
reaper (which the supervisors run too) without spending an attempt, and run again. It prints the
longest kill-to-rerun (the issue's bound is 30 s; the design gives lease + one reap interval +
a claim, about 15 s). The test asserts counts, not seconds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from machine_helpers import Machines, eventually, machine_env, machines_in, wait_exit

from emp_core.queue.queue import Queue
from emp_core.redis import text, text_list, text_map
from emp_core.registry.machines import SlotState, list_machines
from emp_core.settings import QueueSettings

MACHINES = 2
WORKERS_PER_MACHINE = 2
KILL_EVERY_S = 3.0
CHAOS_S = 60.0
JOB = {"service": "simulation", "payload": {"steps": 10}}  # 10 x 50 ms
BACKLOG = 12  # pending jobs kept waiting during the chaos


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Machines]:
    with machines_in(tmp_path / "logs") as m:
        yield m


async def _redis_ms(redis: aioredis.Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def _held_by(redis: aioredis.Redis, queue: Queue, worker_id: str) -> list[str]:
    ids = text_list(await redis.zrange(queue.keys.leases(), 0, -1))
    held = []
    for job_id in ids:
        worker, status = await redis.hmget(queue.keys.job(job_id), "worker_id", "status")
        if worker and text(worker) == worker_id and text(status) in {"claimed", "running"}:
            held.append(job_id)
    return held


async def _running_pids(redis: aioredis.Redis, queue: Queue) -> dict[str, int]:
    """Worker id -> pid of every worker its machine reports running."""
    out = {}
    for machine in await list_machines(redis, queue.keys):
        for w in machine.workers:
            if w.state == SlotState.RUNNING and w.pid is not None:
                out[w.worker_id] = w.pid
    return out


@pytest.mark.slow
async def test_a_worker_killed_every_3_s_for_a_minute_loses_no_job(
    queue: Queue,
    redis: aioredis.Redis,
    settings: QueueSettings,
    machines: Machines,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for m in range(MACHINES):
        env = machine_env(
            settings,
            EMP_MACHINE_ID=f"chaos{m}",
            EMP_WORKERS=f"simulation:{WORKERS_PER_MACHINE}",
            # The defaults under test, whatever machine_env speeds up for other tests.
            EMP_RESTART_BACKOFF_SECONDS="1",
        )
        machines.start(env, name=f"chaos{m}")
    order = [
        f"chaos{m}-simulation-{i}" for i in range(WORKERS_PER_MACHINE) for m in range(MACHINES)
    ]

    async def all_running() -> bool:
        return len(await _running_pids(redis, queue)) == len(order)

    await eventually(all_running, within=60)

    submitted: list[str] = []
    stop_submitting = asyncio.Event()

    async def submitter() -> None:
        while not stop_submitting.is_set():
            depth = (await queue.depth()).get("simulation", 0)
            if depth < BACKLOG:
                submitted.extend(await queue.submit_many([JOB] * (BACKLOG - depth)))
            await asyncio.sleep(0.1)

    feeding = asyncio.create_task(submitter())
    kills: list[tuple[int, str, list[str]]] = []  # (Redis ms, worker, jobs it held)
    began = time.monotonic()
    turn = 0
    try:
        while time.monotonic() - began < CHAOS_S:
            await asyncio.sleep(KILL_EVERY_S)
            pids = await _running_pids(redis, queue)
            # Round robin over the workers that are running now (one in backoff is skipped),
            # preferring one that holds a job: a worker still starting up holds none (on a
            # loaded machine that can be seconds), and killing it would test nothing.
            running = [order[(turn + i) % len(order)] for i in range(len(order))]
            running = [w for w in running if w in pids]
            if not running:
                continue
            victim, held = running[0], []
            for candidate in running:
                if held := await _held_by(redis, queue, candidate):
                    victim = candidate
                    break
            turn = order.index(victim) + 1
            at = await _redis_ms(redis)
            try:
                os.kill(pids[victim], signal.SIGKILL)
            except ProcessLookupError:
                continue
            kills.append((at, victim, held))
    finally:
        stop_submitting.set()
        await feeding

    async def all_completed() -> bool:
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in submitted:
                pipe.hget(queue.keys.job(job_id), "status")
            statuses = await pipe.execute()
        return all(s == b"completed" for s in statuses)

    await eventually(all_completed, within=120, every=0.5)
    for process in machines.started:
        process.send_signal(signal.SIGTERM)
    for process in machines.started:
        await wait_exit(process, within=60)

    # Every job completed, and exactly once.
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in submitted:
            pipe.xrange(queue.keys.events(job_id))
        streams = dict(zip(submitted, await pipe.execute(), strict=True))
    for job_id, entries in streams.items():
        types = [text(f[b"type"]) for _, f in entries]
        assert types.count("completed") == 1, f"job {job_id}: {types}"

    # Every job a killed worker held (and had not finished) was re-queued by the reaper without
    # spending an attempt, and ran again.
    reruns: list[float] = []
    for at, victim, held in kills:
        for job_id in held:
            events = [text_map(f) for _, f in streams[job_id]]
            done_at = next(int(e["at"]) for e in events if e["type"] == "completed")
            if done_at <= at:
                continue  # it finished between the look and the kill
            requeued = [e for e in events if e["type"] == "requeued" and int(e["at"]) >= at]
            assert requeued, f"job {job_id} held by killed {victim} was never re-queued"
            assert requeued[0]["reason"] == "lease_expired"
            claimed = [int(e["at"]) for e in events if e["type"] == "claimed" and int(e["at"]) > at]
            assert claimed, f"job {job_id} held by killed {victim} never ran again"
            reruns.append((claimed[0] - at) / 1000)
            job = await queue.get(job_id)
            assert job.lost_leases >= 1
            assert job.attempts == 1  # lost leases spend no attempt
    assert len(kills) >= CHAOS_S / KILL_EVERY_S * 0.75
    assert len(reruns) >= len(kills) // 2  # most kills caught a worker mid-job

    log = "".join(machines.log(f"chaos{m}") for m in range(MACHINES))
    assert "giving it up" not in log
    with capsys.disabled():
        print(
            f"\nchaos: {MACHINES} machines x {WORKERS_PER_MACHINE} workers, {len(kills)} SIGKILLs "
            f"(one every {KILL_EVERY_S:g} s for {CHAOS_S:g} s), {len(submitted)} jobs each "
            f"completed once; {len(reruns)} jobs held by killed workers: kill -> rerun median "
            f"{statistics.median(reruns):.1f} s, longest {max(reruns):.1f} s (bound 30 s; "
            f"lease {settings.lease_seconds:g} s, "
            f"reaper every {settings.reap_interval_seconds:g} s)"
        )
