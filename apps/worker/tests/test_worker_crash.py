"""The crash test over the Redis transport, on one node and on a real Redis Cluster (the scenario
is ``worker_crash.py``; over gRPC: ``test_worker_grpc_crash.py``)."""

from __future__ import annotations

import pytest
from worker_crash import sigkill_scenario
from worker_helpers import worker_env

from emp_core.queue.queue import Queue


@pytest.fixture(scope="module")
def redis_url(redis_url_both: str) -> str:
    """The crash test runs on one node and on a real three-primary Redis Cluster."""
    return redis_url_both


@pytest.mark.slow
async def test_sigkilled_workers_lose_no_job_and_complete_none_twice(
    redis, queue: Queue, settings, tmp_path, capsys
):
    env = worker_env(settings, EMP_LEASE_SECONDS="1", EMP_REAP_INTERVAL_SECONDS="0.5")
    line = await sigkill_scenario(redis, queue, env, tmp_path, label="Redis")
    with capsys.disabled():
        print(f"\n{line}")
