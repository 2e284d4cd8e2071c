"""The crash test over the gRPC transport: worker processes on ``--transport grpc`` are SIGKILLed
mid-job; each killed stream's jobs run elsewhere, every job completes exactly once (the scenario
is ``worker_crash.py``). The workers are told a Redis URL where nothing listens."""

from __future__ import annotations

import pytest
from grpc_api import grpc_api
from worker_crash import sigkill_scenario
from worker_helpers import worker_env

from emp_core.queue.queue import Queue
from emp_core.settings import QueueSettings

NOWHERE = "redis://127.0.0.1:1/0"


@pytest.mark.slow
async def test_sigkilled_grpc_workers_lose_no_job_and_complete_none_twice(
    redis, redis_url: str, tmp_path, capsys
):
    with grpc_api(redis_url, tmp_path, lease_seconds=1.0) as api:
        queue = Queue(redis, QueueSettings(redis_url=redis_url, queue=api.queue))
        await queue.functions.load()
        env = worker_env(queue.settings, EMP_REDIS_URL=NOWHERE, EMP_API_TOKEN=api.token)
        args = ("--transport", "grpc", "--api", api.address)
        line = await sigkill_scenario(redis, queue, env, tmp_path, args=args, label="gRPC")
    with capsys.disabled():
        print(f"\n{line}")
