"""A gRPC worker across several queues (issue 13): the API serves it from the queues its services
are routed to (``EMP_QUEUE_ROUTES``), with no queue named by the worker. Three queues here:
``simulation`` goes to ``…-sim``, ``sdxl`` to ``…-gpu``, every other service to the home queue. A
worker of ``simulation`` and ``sdxl`` claims and completes jobs of both queues, each job's reports
land in its own queue, a wake-up and a cancel from a queue other than the home one reach it, and
its registry entry and LoRAs are in each queue it serves (listed once) and gone when it leaves."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from api_helpers import Api, running_api
from grpc_helpers import Stream, ended, hello

from emp.v1 import worker_pb2
from emp_core.jobs.job import JobStatus
from emp_core.queue.queue import Queue
from emp_core.redis import text
from emp_core.settings import QueueSettings
from emp_web.testing import Account

SERVICES = ("simulation", "sdxl")


@pytest.fixture
async def api(settings: QueueSettings, database_url: str) -> AsyncIterator[Api]:
    routes = {"simulation": f"{settings.queue}-sim", "sdxl": f"{settings.queue}-gpu"}
    three = settings.model_copy(update={"queue_routes": routes})
    async with running_api(three, database_url, grpc_port=0, run_reaper=False) as running:
        yield running


def _queue(api: Api, service: str) -> Queue:
    return api.services.queues.for_service(service)


async def _events(queue: Queue, job_id: str) -> list[str]:
    entries = await queue.redis.xrange(queue.keys.events(job_id))
    return [text(fields[b"type"]) for _, fields in entries]


async def _reply(worker: Stream) -> worker_pb2.ConnectResponse:
    """The next answer that is not a wake-up (a slot idle in two queues may be woken by both)."""
    while (answer := await worker.read()).HasField("wake"):
        pass
    return answer


async def _connected(stub: Any, admin: Account, worker_id: str) -> Stream:
    worker = Stream(stub, admin.token)
    worker.send(hello=hello(worker_id, SERVICES))
    assert (await worker.read()).HasField("welcome")
    return worker


async def test_a_grpc_worker_claims_and_completes_in_each_queue_it_is_routed_to(
    api: Api, stub: Any, accounts: dict[str, Account]
) -> None:
    queues, home = api.services.queues, api.services.queue
    sim, gpu = _queue(api, "simulation"), _queue(api, "sdxl")
    assert len({home.keys.queue, sim.keys.queue, gpu.keys.queue}) == 3
    worker = await _connected(stub, accounts["admin"], "grpc-queues")
    # Nothing pending anywhere: the slot goes idle in both queues, and a job submitted to the
    # second one wakes it through that queue's control channel.
    worker.send(ready=worker_pb2.Ready(slot=0), request_id=1)
    assert (await worker.read()).HasField("no_job")
    gpu_job = await queues.submit({"service": "sdxl", "payload": {"steps": 1}})
    assert (await worker.read()).wake.slot == 0
    sim_job = await queues.submit({"service": "simulation", "payload": {"steps": 1}})
    other = await queues.submit({"service": "upscale", "payload": {}})  # home: not served
    worker.send(ready=worker_pb2.Ready(slot=0), request_id=2)
    first = (await _reply(worker)).assignment
    worker.send(heartbeat=worker_pb2.Heartbeat(job_id=first.job_id, token=first.token))
    worker.send(
        progress=worker_pb2.Progress(job_id=first.job_id, token=first.token, progress=50),
        request_id=3,
    )
    assert (await _reply(worker)).done.outcome == "progress"
    # Complete and claim next: the other queue's job follows (two calls, the rotation's turn).
    worker.send(
        complete=worker_pb2.Complete(
            job_id=first.job_id, token=first.token, result_json='{"n": 1}', claim_next=True
        ),
        request_id=4,
    )
    second = (await _reply(worker)).assignment
    assert {first.job_id, second.job_id} == {gpu_job, sim_job}
    worker.send(
        fail=worker_pb2.Fail(job_id=second.job_id, token=second.token, error="boom"),
        request_id=5,
    )
    assert (await _reply(worker)).done.job_id == second.job_id
    # Each job's reports are in its own queue: its hash, its events, and nothing elsewhere.
    done, failed = (
        (gpu, sim) if first.job_id == gpu_job else (sim, gpu)
    )  # fmt: skip
    job = await done.get(first.job_id)
    assert (job.status, job.result) == (JobStatus.COMPLETED, {"n": 1})
    assert await _events(done, first.job_id) == ["submitted", "claimed", "progress", "completed"]
    assert (await failed.get(second.job_id)).status in (JobStatus.RETRYING, JobStatus.FAILED)
    assert (await _events(failed, second.job_id))[-1] in ("retrying", "failed")
    for queue in (home, sim, gpu):
        for job_id in (first.job_id, second.job_id):
            if queue is not (done if job_id == first.job_id else failed):
                assert not await queue.redis.exists(queue.keys.job(job_id))
    # The home queue's job is not this worker's: it only serves what its services route to.
    worker.send(ready=worker_pb2.Ready(slot=0), request_id=6)
    answer = await _reply(worker)
    assert not answer.HasField("assignment") or answer.assignment.job_id == second.job_id
    assert (await home.get(other)).status is JobStatus.PENDING
    await ended(worker)


async def test_a_cancel_in_another_queue_than_home_reaches_the_grpc_worker(
    api: Api, stub: Any, accounts: dict[str, Account]
) -> None:
    gpu = _queue(api, "sdxl")
    job_id = await api.services.queues.submit({"service": "sdxl", "payload": {}})
    worker = await _connected(stub, accounts["admin"], "grpc-cancel-gpu")
    worker.send(ready=worker_pb2.Ready(), request_id=1)
    got = (await worker.read()).assignment
    assert got.job_id == job_id
    worker.send(
        progress=worker_pb2.Progress(job_id=job_id, token=got.token, progress=10), request_id=2
    )
    assert (await worker.read()).done.outcome == "progress"
    assert await api.services.queues.cancel(job_id)  # found in its queue, published there
    assert (await worker.read()).cancel.job_id == job_id
    worker.send(complete=worker_pb2.Complete(job_id=job_id, token=got.token))
    assert (await worker.read()).refused.job_id == job_id
    assert (await gpu.get(job_id)).status is JobStatus.CANCELLED
    await ended(worker)


async def test_registry_and_loras_in_each_queue_served_and_gone_at_the_end(
    api: Api, stub: Any, accounts: dict[str, Account]
) -> None:
    redis, home = api.services.redis, api.services.queue
    served = [_queue(api, s) for s in SERVICES]
    worker_id, sha = "grpc-everywhere", hashlib.sha256(b"style").hexdigest()
    worker = await _connected(stub, accounts["admin"], worker_id)
    worker.send(loras=worker_pb2.Loras(sha256=[sha]), request_id=1)
    assert (await worker.read()).done.outcome == "advertised"
    for queue in served:
        assert await redis.zscore(queue.keys.workers(), worker_id) is not None
        assert await redis.sismember(queue.keys.worker_loras(worker_id), sha)
        assert await redis.sismember(queue.keys.lora_holders(sha), worker_id)
        assert await redis.hget(queue.keys.services_served(), "sdxl") is not None
    # Not in the home queue, which none of its services is routed to.
    assert await redis.zscore(home.keys.workers(), worker_id) is None
    assert not await redis.exists(home.keys.worker_loras(worker_id))
    listed = [w for w in await api.services.workers.live() if w.worker_id == worker_id]
    assert len(listed) == 1  # one worker, however many queues it is registered in
    workers = (await api.http.get("/api/workers", headers=accounts["admin"].headers)).json()
    assert [w["id"] for w in workers].count(worker_id) == 1
    await ended(worker)
    for _ in range(200):
        if not any([await redis.exists(q.keys.worker(worker_id)) for q in served]):
            break
        await asyncio.sleep(0.025)
    for queue in served:
        assert await redis.zscore(queue.keys.workers(), worker_id) is None
        assert not await redis.exists(queue.keys.worker(worker_id))
        assert not await redis.exists(queue.keys.worker_loras(worker_id))
        assert not await redis.sismember(queue.keys.lora_holders(sha), worker_id)


async def test_a_worker_of_home_services_only_is_served_by_the_home_queue(
    api: Api, stub: Any, accounts: dict[str, Account]
) -> None:
    """A worker whose services are not routed stays on the home queue alone, as before routes."""
    home = api.services.queue
    job_id = await api.services.queues.submit({"service": "upscale", "payload": {"x": 1}})
    worker = Stream(stub, accounts["admin"].token)
    worker.send(hello=hello("grpc-home", ("upscale",)))
    await worker.read()
    worker.send(ready=worker_pb2.Ready(), request_id=1)
    got = (await worker.read()).assignment
    assert (got.job_id, orjson.loads(got.payload_json)) == (job_id, {"x": 1})
    worker.send(
        complete=worker_pb2.Complete(job_id=job_id, token=got.token, claim_next=True),
        request_id=2,
    )
    assert (await worker.read()).HasField("no_job")
    assert (await home.get(job_id)).status is JobStatus.COMPLETED
    assert await home.redis.zscore(home.keys.workers(), "grpc-home") is not None
    await ended(worker)


async def _woken_claim(api: Api, stub: Any, admin: Account, woke: str, other: str) -> None:
    """A fresh stream's slot goes idle in both queues; ``woke``'s job wakes it, then ``other``'s
    job arrives before the slot's Ready, which names the queue its Wake named."""
    queues = api.services.queues
    worker = await _connected(stub, admin, f"grpc-woken-by-{woke}")
    worker.send(ready=worker_pb2.Ready(slot=0), request_id=1)
    assert (await worker.read()).HasField("no_job")
    woke_job = await queues.submit({"service": woke, "payload": {}})
    wake = (await worker.read()).wake
    assert (wake.slot, wake.queue) == (0, _queue(api, woke).keys.queue)
    other_job = await queues.submit({"service": other, "payload": {}})
    worker.send(ready=worker_pb2.Ready(slot=0, first_queue=wake.queue), request_id=2)
    got = (await _reply(worker)).assignment
    assert got.job_id == woke_job  # not other's, which the rotation's turn may point at
    worker.send(
        complete=worker_pb2.Complete(job_id=got.job_id, token=got.token, claim_next=True),
        request_id=3,
    )
    following = (await _reply(worker)).assignment
    assert following.job_id == other_job  # left to the rotation, not lost
    worker.send(complete=worker_pb2.Complete(job_id=other_job, token=following.token), request_id=4)
    assert (await _reply(worker)).done.outcome == "completed"
    await ended(worker)


async def test_a_slot_woken_by_a_queues_job_claims_there_first(
    api: Api, stub: Any, accounts: dict[str, Account]
) -> None:
    """The Wake names the queue whose control channel rang, and a Ready naming it as
    ``first_queue`` takes that queue's job before the other's. Each queue wakes a fresh stream
    once, so in one of the two the rotation's turn points at the other queue."""
    await _woken_claim(api, stub, accounts["admin"], "sdxl", "simulation")
    await _woken_claim(api, stub, accounts["admin"], "simulation", "sdxl")


async def test_a_first_queue_the_worker_is_not_served_from_is_ignored(
    api: Api, stub: Any, accounts: dict[str, Account], caplog: pytest.LogCaptureFixture
) -> None:
    """``first_queue`` is only a preference: a queue this worker is not served from (the home
    queue here, which none of its services is routed to, or no queue at all) is ignored with a
    warning, the claim goes in turn, and the stream carries on."""
    home = api.services.queue
    home_job = await api.services.queues.submit({"service": "upscale", "payload": {}})
    sim_job = await api.services.queues.submit({"service": "simulation", "payload": {}})
    worker = await _connected(stub, accounts["admin"], "grpc-first-elsewhere")
    with caplog.at_level("WARNING", logger="emp_api.rpc.worker_session"):
        worker.send(ready=worker_pb2.Ready(first_queue=home.keys.queue), request_id=1)
        got = (await _reply(worker)).assignment
        worker.send(ready=worker_pb2.Ready(slot=1, first_queue="nowhere"), request_id=2)
        assert (await _reply(worker)).HasField("no_job")
    assert got.job_id == sim_job
    assert (await home.get(home_job)).status is JobStatus.PENDING
    warned = [r.getMessage() for r in caplog.records if "not served from" in r.getMessage()]
    assert len(warned) == 2
    assert f"{home.keys.queue!r}" in warned[0]
    assert "'nowhere'" in warned[1]
    await ended(worker)
