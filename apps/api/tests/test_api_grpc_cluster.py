"""The API's gRPC ``WorkerService`` on a real Redis Cluster (three primaries): a worker whose two
services are routed to queues on two different primaries claims, reports and completes jobs of
both through one stream, and the Lua's wake-ups reach it from each queue's own node (sharded
pub/sub: the server's ``ShardSubscription`` holds each control channel on its queue's shard).
Also what first kept the API from starting on a cluster: its rate limits."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis as sync_redis
from api_helpers import Api, running_api
from grpc_helpers import Stream, ended, hello

from emp.v1 import worker_pb2
from emp_core.jobs.job import JobStatus
from emp_core.queue.keys import Keys
from emp_core.queue.queue import Queue
from emp_core.redis import connect
from emp_core.settings import QueueSettings
from emp_web.testing import Account

SERVICES = ("sima", "simb")


async def _on_two_primaries(cluster_url: str, prefix: str) -> tuple[str, str]:
    """Two queue names whose hash slots are on different primaries (by the cluster's own map)."""
    client = connect(cluster_url)
    try:
        await client.initialize()  # type: ignore[attr-defined]
        by_port: dict[int, str] = {}
        for i in range(1000):
            name = f"{prefix}-{i}"
            port = client.get_node_from_key(Keys("emp", name).pending_count()).port  # type: ignore[attr-defined]
            by_port.setdefault(port, name)
            if len(by_port) == 2:
                first, second = by_port.values()
                return first, second
    finally:
        await client.aclose()
    raise AssertionError("no two queue names on two primaries")


async def _cluster_settings(cluster_url: str) -> QueueSettings:
    """A home queue and the two services' queues, on two different primaries."""
    home = f"c{uuid.uuid4().hex[:10]}"
    routes = dict(zip(SERVICES, await _on_two_primaries(cluster_url, home), strict=True))
    return QueueSettings(redis_url=cluster_url, queue=home, queue_routes=routes)


@pytest.fixture
async def api(redis_cluster_url: str, database_url: str) -> AsyncIterator[Api]:
    settings = await _cluster_settings(redis_cluster_url)
    async with running_api(settings, database_url, grpc_port=0) as running:
        yield running


def _port(queue: Queue) -> int:
    return int(queue.redis.get_node_from_key(queue.keys.pending_count()).port)  # type: ignore[attr-defined]


async def _reply(worker: Stream) -> worker_pb2.ConnectResponse:
    while (answer := await worker.read()).HasField("wake"):
        pass
    return answer


async def test_a_grpc_worker_works_two_queues_on_two_primaries(
    api: Api, stub: object, accounts: dict[str, Account]
) -> None:
    queues = api.services.queues
    served = [queues.for_service(s) for s in SERVICES]
    assert _port(served[0]) != _port(served[1])
    worker = Stream(stub, accounts["admin"].token)
    worker.send(hello=hello("grpc-cluster", SERVICES))
    assert (await worker.read()).HasField("welcome")
    # The server holds the worker's control channel of each queue on that queue's own node, as
    # a shard channel only.
    for queue in served:
        node = sync_redis.Redis(port=_port(queue), decode_responses=True)
        channel = queue.keys.control_channel("grpc-cluster")
        assert node.execute_command("PUBSUB", "SHARDNUMSUB", channel) == [channel, 1]
        assert node.pubsub_numsub(channel) == [(channel, 0)]
        node.close()
    rid = 0
    for service, queue in zip(SERVICES, served, strict=True):
        rid += 1
        worker.send(ready=worker_pb2.Ready(slot=0), request_id=rid)
        assert (await _reply(worker)).HasField("no_job")  # idle in both queues
        job_id = await queues.submit({"service": service, "payload": {"n": rid}})
        wake = (await worker.read()).wake  # from the job's queue, on its node
        assert (wake.slot, wake.queue) == (0, queue.keys.queue)
        rid += 1
        worker.send(ready=worker_pb2.Ready(slot=0, first_queue=wake.queue), request_id=rid)
        got = (await _reply(worker)).assignment
        assert got.job_id == job_id
        rid += 1
        worker.send(
            progress=worker_pb2.Progress(job_id=job_id, token=got.token, progress=50),
            request_id=rid,
        )
        assert (await _reply(worker)).done.outcome == "progress"
        rid += 1
        worker.send(
            complete=worker_pb2.Complete(
                job_id=job_id, token=got.token, result_json='{"ok": true}', claim_next=True
            ),
            request_id=rid,
        )
        assert (await _reply(worker)).HasField("no_job")  # completed; nothing else pending
        job = await queue.get(job_id)
        assert (job.status, job.result) == (JobStatus.COMPLETED, {"ok": True})
    await ended(worker)


async def test_the_rate_limits_count_on_a_cluster(
    redis_cluster_url: str, database_url: str
) -> None:
    """limits' cluster storage, from the ``redis+cluster://`` URL (its plain storage refused the
    scheme, and the API did not start)."""
    settings = await _cluster_settings(redis_cluster_url)
    async with running_api(settings, database_url, token_failure_limits="3/minute") as api:
        bad = {"Authorization": "Bearer emp_guess"}
        codes = [(await api.http.get("/api/jobs", headers=bad)).status_code for _ in range(5)]
        assert codes == [401, 401, 401, 429, 429]
