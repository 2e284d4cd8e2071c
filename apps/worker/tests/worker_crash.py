"""The crash scenario shared by the Redis and gRPC crash tests: worker processes are killed with
SIGKILL mid-job while 500 jobs run, and every job must end completed exactly once: none lost
(the reaper hands a dead worker's jobs to the others once their lease runs out) and none
completed twice (fencing refuses the dead claim). It prints how long recovery took: from the
kill to the killed worker's job completing elsewhere."""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker_helpers import worker_command

from emp_core.queue.queue import Queue
from emp_core.redis import text

JOBS = 500
WORKERS = 4
SLOTS = 2
KILLS = 5
PAYLOAD = {"steps": 3, "step_time": 0.06}  # long enough for 5 kills on a loaded CI machine


@dataclass
class Fleet:
    """Worker processes started with the test's environment; each logs to a file of its own."""

    env: dict[str, str]
    logs: Path
    args: tuple[str, ...] = ()  # more flags for every worker (the transport)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    started: int = 0

    def spawn(self) -> str:
        self.started += 1
        worker_id = f"crash-{self.started}"
        with (self.logs / f"{worker_id}.log").open("wb") as out:
            self.procs[worker_id] = subprocess.Popen(
                worker_command("--worker-id", worker_id, "--slots", str(SLOTS), *self.args),
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return worker_id

    def kill(self, worker_id: str) -> None:
        proc = self.procs.pop(worker_id)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> dict[str, int]:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        codes = {wid: proc.wait(30) for wid, proc in self.procs.items()}
        self.procs.clear()
        return codes

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def held_jobs(redis, queue: Queue) -> dict[str, list[str]]:
    """Worker id -> the jobs it holds a lease on now."""
    ids = [text(j) for j in await redis.zrange(queue.keys.leases(), 0, -1)]
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(queue.keys.job(job_id), "worker_id", "status")
        rows = await pipe.execute()
    held: dict[str, list[str]] = {}
    for job_id, (worker, status) in zip(ids, rows, strict=True):
        if worker and text(status) in {"claimed", "running"}:
            held.setdefault(text(worker), []).append(job_id)
    return held


async def statuses(redis, queue: Queue, ids: list[str]) -> list[str]:
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(queue.keys.job(job_id), "status")
        return [text(s) for s in await pipe.execute()]


async def sigkill_scenario(
    redis: Any, queue: Queue, env: dict[str, str], logs: Path, *, args: tuple[str, ...] = (),
    label: str,
) -> str:  # fmt: skip
    """Run the scenario with workers started with ``env`` and ``args``; assert that every job
    completed exactly once, the killed workers' jobs elsewhere; return the line to print."""
    ids = await queue.submit_many(
        [{"service": "simulation", "payload": PAYLOAD, "max_attempts": 10}] * JOBS
    )
    fleet = Fleet(env, logs, args)
    kills: list[tuple[float, str, list[str]]] = []  # (when, worker, jobs it held)
    began = time.monotonic()
    try:
        for _ in range(WORKERS):
            fleet.spawn()

        # Once work flows, kill a busy worker and start a fresh one, every 0.3 s.
        while len(kills) < KILLS:
            await asyncio.sleep(0.3)
            done = (await statuses(redis, queue, ids)).count("completed")
            if done > JOBS - 100:
                break  # too little work left for a kill to land mid-job reliably
            if done < 50:
                continue
            busy = [w for w, jobs in (await held_jobs(redis, queue)).items() if w in fleet.procs]
            if not busy:
                continue
            victim = random.choice(busy)
            fleet.kill(victim)
            killed_at = time.time()
            held = (await held_jobs(redis, queue)).get(victim, [])
            kills.append((killed_at, victim, held))
            # A fresh one replaces it; not waited for: on a loaded machine a start takes seconds,
            # and the kills must land while work remains.
            fleet.spawn()

        async with asyncio.timeout(60):
            while (await statuses(redis, queue, ids)).count("completed") < JOBS:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        elapsed = time.monotonic() - began
        codes = fleet.stop_all()
    finally:
        fleet.kill_all()

    assert all(code == 0 for code in codes.values()), codes

    # Every job completed, and exactly once.
    assert await statuses(redis, queue, ids) == ["completed"] * JOBS
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.xrange(queue.keys.events(job_id))
        streams = await pipe.execute()
    completed_at: dict[str, int] = {}
    for job_id, entries in zip(ids, streams, strict=True):
        done = [f for _, f in entries if f[b"type"] == b"completed"]
        assert len(done) == 1, f"job {job_id} completed {len(done)} times"
        completed_at[job_id] = int(done[0][b"at"])

    # The jobs the dead held were completed elsewhere, after the reaper re-queued them.
    recoveries = []
    for killed_at, victim, held in kills:
        for job_id in held:
            job = await queue.get(job_id)
            assert job.worker_id != victim
            assert job.lost_leases >= 1  # re-queued by the reaper, no attempt spent
            recoveries.append(completed_at[job_id] / 1000 - killed_at)
    assert len(kills) >= 3
    assert len(recoveries) >= len(kills) // 2  # most kills caught a worker mid-job
    assert max(recoveries) < 30  # the bound; with a 1 s lease it is about 1-2 s

    return (
        f"crash test ({label}): {JOBS} jobs on {WORKERS} workers x {SLOTS} slots, {len(kills)} "
        f"SIGKILLs ({fleet.started} processes in all) in {elapsed:.1f} s; "
        f"{len(recoveries)} jobs recovered from killed workers: recovery (kill -> completed "
        f"elsewhere) median {statistics.median(recoveries):.2f} s, "
        f"max {max(recoveries):.2f} s (lease 1 s, reaper every 0.5 s)"
    )
