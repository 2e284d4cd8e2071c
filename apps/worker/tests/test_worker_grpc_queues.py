"""The gRPC transport of a worker whose services the API routes to two queues (issue 13): a slot
idle in both, woken by one queue's job, claims that job first, as a Redis worker's slot does
(``WakeSignal.queue``, ``Queues.claim(first=...)``); and a whole worker works two queues on two
primaries of a Redis Cluster, woken from each queue's own node. A real ``emp-api`` process with
``EMP_QUEUE_ROUTES`` (``grpc_api.py``), the real ``GrpcTransport``, a real Redis; the worker is
told a Redis URL where nothing listens, so the wake-ups and the claims go through the stream."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis.asyncio as aioredis
from grpc_api import GrpcApi, grpc_api
from worker_helpers import eventually, make_worker_settings, queue_backoff

from emp_core.jobs.job import JobStatus
from emp_core.queue.keys import Keys
from emp_core.queue.queue import Queue
from emp_core.redis import connect, text
from emp_core.redis.client import connect_sync
from emp_core.settings import QueueSettings
from emp_worker.connectors import SimulationConnector
from emp_worker.transport.grpc import GrpcTransport
from emp_worker.worker import Worker

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


def _on_two_primaries(cluster_url: str) -> dict[str, str]:
    """Routes of two services to two queues whose slots are on different primaries."""
    client = connect_sync(cluster_url)
    try:
        by_port: dict[int, str] = {}
        for i in range(1000):
            name = f"qc{SUFFIX}-{i}"
            node = client.get_node_from_key(Keys("emp", name).pending_count())  # type: ignore[attr-defined]
            by_port.setdefault(node.port, name)
            if len(by_port) == 2:
                return {f"simc{n}{SUFFIX}": q for n, q in enumerate(by_port.values())}
    finally:
        client.close()
    raise AssertionError("no two queue names on two primaries")


@pytest.fixture(scope="module")
def cluster_routes(redis_cluster_url: str) -> dict[str, str]:
    return _on_two_primaries(redis_cluster_url)


@pytest.fixture(scope="module")
def cluster_api(
    redis_cluster_url: str, cluster_routes: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GrpcApi]:
    routes = ",".join(f"{service}={queue}" for service, queue in cluster_routes.items())
    folder = tmp_path_factory.mktemp("cluster-api")
    with grpc_api(redis_cluster_url, folder, lease_seconds=5, EMP_QUEUE_ROUTES=routes) as running:
        yield running


async def _idle_in(queue: Queue, service: str, worker_id: str) -> bool:
    """Whether a slot of ``worker_id`` waits in one of ``queue``'s idle sets of ``service``."""
    for profile in await queue.redis.zrange(queue.keys.profiles_seen(service), 0, -1):
        slots = await queue.redis.zrange(queue.keys.idle(service, text(profile)), 0, -1)
        if any(text(slot).startswith(f"{worker_id}#") for slot in slots):
            return True
    return False


async def test_a_grpc_worker_works_two_queues_on_two_primaries(
    cluster_api: GrpcApi, cluster_routes: dict[str, str], redis_cluster_url: str
) -> None:
    """The API on a cluster serves a worker of two services routed to queues on two primaries:
    each queue's job, submitted while the worker is idle in it, wakes it (the Lua's SPUBLISH on
    that queue's node, the API's sharded subscription there) and is run and completed. The idle
    wait is 300 s, so only a wake-up brings a job to it within the test's limits."""
    client = connect(redis_cluster_url)
    await client.initialize()  # type: ignore[attr-defined]  # the slot map, for the nodes below
    base = QueueSettings(redis_url=redis_cluster_url, queue=cluster_api.queue)
    queues = _routed(client, base, cluster_routes)
    nodes = [client.get_node_from_key(q.keys.pending_count()) for q in queues.values()]  # type: ignore[attr-defined]
    assert len({node.port for node in nodes}) == 2
    settings = make_worker_settings(
        base, services=list(cluster_routes), transport="grpc", api_address=cluster_api.address,
        api_token=cluster_api.token, redis_url=NOWHERE, burst=False, idle_wait_seconds=300,
    )  # fmt: skip
    connector = SimulationConnector(steps=1, step_time=0)
    worker = Worker(
        settings, redis=None, connectors={s: connector for s in cluster_routes},
        classifier=queue_backoff,
    )  # fmt: skip
    run = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), 30)
        for service, queue in queues.items():
            await eventually(lambda q=queue, s=service: _idle_in(q, s, worker.id), within=30)
            job_id = await queue.submit({"service": service, "payload": {"steps": 1}})
            await eventually(lambda q=queue, j=job_id: _completed(q, j), within=30)
        # The job is completed in Redis before the API's answer reaches the worker's counters.
        await eventually(_counted(worker, 2), within=10)
        assert (worker.stats.completed, worker.stats.failed, worker.stats.lost) == (2, 0, 0)
    finally:
        worker.stop()
        await asyncio.wait_for(run, 20)
        await client.aclose()


def _counted(worker: Worker, completed: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return worker.stats.completed >= completed

    return check


async def _completed(queue: Queue, job_id: str) -> bool:
    return (await queue.get(job_id)).status is JobStatus.COMPLETED
