"""The worker-throughput rows of ``make bench-grpc``: one burst ``emp-worker`` process drains N
no-op jobs on the Redis transport and then on the gRPC transport (the API process of the same
run), with 1 and with 4 slots.

A job is the simulation connector with one instant step (one progress report, one result), so
what is timed is the transport: claim, progress, complete-and-claim-next per job. The rate is
N over the time from the first job's claim to the last one's completion (the queue's own
timestamps), so the process's start-up is not in it. Both workers log at WARNING (a line per
job would be timed too). Run before anything else submits ``simulation`` jobs to the queue, so
the worker meets only its own.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from typing import Any

from emp_core.jobs.job import JobStatus
from emp_core.queue.queue import Queue

_PAYLOAD = {"steps": 1, "step_time": 0}


async def _drain(
    queue: Queue, jobs: int, slots: int, args: list[str], env: dict[str, str]
) -> dict[str, Any]:
    ids = await queue.submit_many([{"service": "simulation", "payload": _PAYLOAD}] * jobs)
    command = [
        sys.executable, "-m", "emp_worker.main", "--burst", "--service", "simulation",
        "--slots", str(slots), "--log-level", "WARNING", *args,
    ]  # fmt: skip
    done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"the bench worker failed: {done.stderr.decode()[-2000:]}")
    records = [await queue.get(job_id) for job_id in ids]
    finished = [r for r in records if r.status is JobStatus.COMPLETED]
    first = min(r.claimed_at for r in finished if r.claimed_at is not None)
    last = max(r.finished_at for r in finished if r.finished_at is not None)
    seconds = max((last - first).total_seconds(), 1e-3)
    return {
        "jobs": jobs, "slots": slots, "completed": len(finished), "seconds": seconds,
        "rate": len(finished) / seconds,
    }  # fmt: skip


async def worker_throughput(
    queue: Queue, address: str, token: str, *, jobs: int, slot_counts: tuple[int, ...] = (1, 4)
) -> dict[str, Any]:
    """Jobs/s of a burst worker per transport and slot count (``queue`` is the API's)."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="emp-bench-loras-") as folder:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMP_")}
        env["EMP_LORA_CACHE_DIR"] = folder
        redis = (["--redis-url", queue.settings.redis_url, "--queue", queue.settings.queue], env)
        # The gRPC worker is given no Redis at all: everything goes through the API, which also
        # decides its queues (the routes of the API's own settings; --queue is refused).
        grpc = (
            ["--transport", "grpc", "--api", address, "--redis-url", "redis://127.0.0.1:1/0"],
            {**env, "EMP_API_TOKEN": token},
        )
        for slots in slot_counts:
            for name, (args, environment) in (("redis", redis), ("grpc", grpc)):
                out[f"{name}_{slots}"] = await _drain(queue, jobs, slots, args, environment)
    return out
