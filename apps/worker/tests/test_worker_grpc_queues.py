"""The gRPC transport of a worker whose services the API routes to two queues (issue 13): a slot
idle in both, woken by one queue's job, claims that job first, as a Redis worker's slot does
(``WakeSignal.queue``, ``Queues.claim(first=...)``). A real ``emp-api`` process with
``EMP_QUEUE_ROUTES`` (``grpc_api.py``), the real ``GrpcTransport``, a real Redis; the worker is
told a Redis URL where nothing listens, so the wake-up and the claim go through the stream."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from grpc_api import GrpcApi, grpc_api
from worker_helpers import make_worker_settings

from emp_core.jobs.job import JobStatus
from emp_core.queue.queue import Queue
from emp_core.settings import QueueSettings
from emp_worker.transport.grpc import GrpcTransport

NOWHERE = "redis://127.0.0.1:1/0"
SUFFIX = uuid.uuid4().hex[:10]
# Two services, each routed to a queue of its own (neither is the API's home queue).
ROUTES = {f"sima{SUFFIX}": f"qa{SUFFIX}", f"simb{SUFFIX}": f"qb{SUFFIX}"}


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcApi]:
    routes = ",".join(f"{service}={queue}" for service, queue in ROUTES.items())
    # Leases long enough that none runs out while the test holds a job without heartbeats.
    with grpc_api(
        redis_url, tmp_path_factory.mktemp("api"), lease_seconds=60, EMP_QUEUE_ROUTES=routes
    ) as running:
        yield running


def _routed(redis: aioredis.Redis, base: QueueSettings, routes: dict[str, str]) -> dict[str, Queue]:
    """Each routed service's queue, by service."""
    return {s: Queue(redis, base.model_copy(update={"queue": q})) for s, q in routes.items()}


async def _woken_claim(
    api: GrpcApi, redis: aioredis.Redis, redis_url: str, woke: str, other: str
) -> None:
    """A fresh transport's slot 0 goes idle in both queues; ``woke``'s job rings it, ``other``'s
    job arrives before its claim, and the claim with the signal's queue takes ``woke``'s job."""
    base = QueueSettings(redis_url=redis_url, queue=api.queue)
    queues = _routed(redis, base, ROUTES)
    settings = make_worker_settings(
        base, services=list(ROUTES), transport="grpc", api_address=api.address,
        api_token=api.token, redis_url=NOWHERE, burst=False,
    )  # fmt: skip
    transport = GrpcTransport(settings)
    await transport.open(lambda message: None, lambda job_id, token, why: None)
    try:
        signal = transport.signal(0)
        signal.clear()
        assert (await transport.claim(0)).claimed is None
        woke_job = await queues[woke].submit({"service": woke})
        assert await signal.wait(30)
        assert signal.queue == queues[woke].keys.queue
        first = signal.queue
        signal.clear()
        other_job = await queues[other].submit({"service": other})
        claimed = (await transport.claim(0, first)).claimed
        assert claimed is not None
        assert claimed.id == woke_job  # not other's, which the API's turn may point at
        following = (await transport.complete(claimed, {"ok": 1}, next_for_slot=0)).claimed
        assert following is not None
        assert following.id == other_job  # left to the rotation, not lost
        assert await transport.complete(following, {"ok": 2}, next_for_slot=None) is None
        for service, job_id in ((woke, woke_job), (other, other_job)):
            assert (await queues[service].get(job_id)).status is JobStatus.COMPLETED
    finally:
        await transport.close(1)


async def test_a_grpc_slot_woken_by_a_queues_job_claims_there_first(
    api: GrpcApi, redis: aioredis.Redis, redis_url: str
) -> None:
    """Each queue wakes a fresh stream once: in one of the two, the API's rotation would have
    started at the other queue had the claim not named the woken one."""
    first, second = ROUTES
    await _woken_claim(api, redis, redis_url, first, second)
    await _woken_claim(api, redis, redis_url, second, first)
