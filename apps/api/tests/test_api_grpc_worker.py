"""WorkerService.Connect against a real server: a worker with no Redis claims, reports progress
and completes through the stream; a stale report is refused; a stream that drops loses its lease
like a dead worker, and the job then runs elsewhere; only admins may connect; a worker's LoRAs
are written to its set in Redis, steer its claim and are withdrawn when the stream ends."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson
import pytest
from api_helpers import Api, running_api
from grpc_helpers import Stream, ended, hello

from emp.v1 import worker_pb2
from emp_core.jobs.job import JobStatus
from emp_core.settings import QueueSettings
from emp_web.testing import Account, claim


@pytest.fixture
async def api(settings: QueueSettings, database_url: str) -> AsyncIterator[Api]:
    short = settings.model_copy(update={"lease_seconds": 1.0})
    async with running_api(short, database_url, grpc_port=0, run_reaper=False) as running:
        yield running


async def claimed_by(
    stub: Any, admin: Account, worker_id: str
) -> tuple[Stream, worker_pb2.Assignment]:
    """A worker's stream that said hello and was given the next job."""
    worker = Stream(stub, admin.token)
    worker.send(hello=hello(worker_id))
    await worker.read()
    worker.send(ready=worker_pb2.Ready())
    return worker, (await worker.read()).assignment


async def test_claim_progress_complete(api: Api, stub: Any, accounts: dict[str, Account]) -> None:
    queue = api.services.queue
    job_id = await queue.submit({"service": "simulation", "payload": {"steps": 2}})
    worker = Stream(stub, accounts["admin"].token)
    worker.send(hello=hello())
    assert (await worker.read()).welcome.lease_seconds == 1.0
    worker.send(ready=worker_pb2.Ready())
    got = (await worker.read()).assignment
    assert (got.job_id, orjson.loads(got.payload_json)) == (job_id, {"steps": 2})
    worker.send(heartbeat=worker_pb2.Heartbeat(job_id=job_id, token=got.token))
    worker.send(progress=worker_pb2.Progress(job_id=job_id, token=got.token, progress=50))
    worker.send(
        complete=worker_pb2.Complete(job_id=job_id, token=got.token, result_json='{"n": 1}')
    )
    # A report under a wrong token is refused, not applied.
    worker.send(progress=worker_pb2.Progress(job_id=job_id, token="999", progress=60))
    refused = (await worker.read()).refused
    assert refused.job_id == job_id
    job = await queue.get(job_id)
    assert (job.status, job.result) == (JobStatus.COMPLETED, {"n": 1})
    worker.outbox.put_nowait(None)


async def test_outputs_of_a_grpc_worker_are_scheduled_for_deletion(
    api: Api, stub: Any, accounts: dict[str, Account]
) -> None:
    """The outputs' retention index is in Redis, which a gRPC worker cannot reach: the server
    records the output paths of the result it receives, and only those under outputs/."""
    queue = api.services.queue
    job_id = await queue.submit({"service": "simulation", "payload": {}})
    worker, got = await claimed_by(stub, accounts["admin"], "grpc-outputs")
    kept, foreign = f"outputs/{job_id}/0.png", "loras/someone/else.safetensors"
    result = {"images": [{"path": kept}, {"path": foreign}]}
    seconds, _ = await queue.redis.time()
    worker.send(
        request_id=1,
        complete=worker_pb2.Complete(
            job_id=job_id, token=got.token, result_json=orjson.dumps(result).decode()
        ),
    )
    assert (await worker.read()).done.outcome == "completed"
    due = await queue.redis.zscore(queue.keys.outputs(), kept)
    assert due is not None
    assert due / 1000 >= int(seconds) + queue.settings.retention_seconds - 1
    assert await queue.redis.zscore(queue.keys.outputs(), foreign) is None
    worker.outbox.put_nowait(None)


async def test_a_dropped_stream_loses_its_lease(
    api: Api, stub: Any, accounts: dict[str, Account]
) -> None:
    queue = api.services.queue
    job_id = await queue.submit({"service": "simulation", "payload": {}})
    worker = Stream(stub, accounts["admin"].token)
    worker.send(hello=hello("grpc-dies"))
    await worker.read()
    worker.send(ready=worker_pb2.Ready())
    assert (await worker.read()).assignment.job_id == job_id
    worker.call.cancel()  # the worker's host vanished mid-job

    async def requeued() -> bool:
        await queue.reap()
        return (await queue.get(job_id)).status is JobStatus.PENDING

    for _ in range(200):
        if await requeued():
            break
        await asyncio.sleep(0.05)
    again = await claim(queue)  # a Redis worker takes it
    assert again.id == job_id
    await queue.complete(again, None)


async def test_only_admins_and_hello_first(stub: Any, accounts: dict[str, Account]) -> None:
    user = Stream(stub, accounts["alice"].token)
    user.send(hello=hello())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await user.read()
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    rude = Stream(stub, accounts["admin"].token)
    rude.send(ready=worker_pb2.Ready())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rude.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = Stream(stub, accounts["admin"].token)
    bad.send(hello=worker_pb2.Hello(worker_id="w", services=[]))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await bad.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "services" in info.value.details()


async def test_a_cancel_reaches_the_worker(
    api: Api, stub: Any, accounts: dict[str, Account]
) -> None:
    queue = api.services.queue
    job_id = await queue.submit({"service": "simulation", "payload": {}})
    worker, got = await claimed_by(stub, accounts["admin"], "grpc-cancelled")
    worker.send(progress=worker_pb2.Progress(job_id=job_id, token=got.token, progress=10))
    for _ in range(200):  # until the progress has made it running
        if (await queue.get(job_id)).status is JobStatus.RUNNING:
            break
        await asyncio.sleep(0.025)
    await queue.cancel(job_id)
    assert (await worker.read()).cancel.job_id == job_id
    worker.send(complete=worker_pb2.Complete(job_id=job_id, token=got.token))
    assert (await worker.read()).refused.job_id == job_id  # no longer this stream's job
    assert (await queue.get(job_id)).status is JobStatus.CANCELLED
    worker.outbox.put_nowait(None)


async def test_a_cancel_reaches_the_worker_after_the_control_channel_was_lost(
    api: Api, stub: Any, accounts: dict[str, Account]
) -> None:
    """Redis drops the API's subscriptions (a restart, a network blip, CLIENT KILL): the stream
    subscribes again by itself, tells the worker's idle slots to look (a wake-up may have been
    missed), and a later cancel still reaches the worker."""
    queue = api.services.queue
    job_id = await queue.submit({"service": "simulation", "payload": {}})
    worker, got = await claimed_by(stub, accounts["admin"], "grpc-resubscribed")
    killed = await queue.redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    assert int(killed) >= 1
    woken = await asyncio.wait_for(worker.read(), 15)
    assert woken.WhichOneof("message") == "wake"
    assert woken.wake.slot == -1
    await queue.cancel(job_id)
    assert (await asyncio.wait_for(worker.read(), 15)).cancel.job_id == job_id
    worker.send(complete=worker_pb2.Complete(job_id=job_id, token=got.token))
    assert (await worker.read()).refused.job_id == job_id
    worker.outbox.put_nowait(None)


def _sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _lora(name: str) -> dict[str, Any]:
    return {
        "id": name, "name": f"{name}.safetensors", "sha256": _sha(name), "size": 100,
        "scope": "user", "url": f"http://blobs.invalid/{name}",
    }  # fmt: skip


async def test_a_grpc_workers_loras_are_written_steer_its_claim_and_are_withdrawn(
    api: Api, stub: Any, accounts: dict[str, Account]
) -> None:
    queue, redis = api.services.queue, api.services.redis
    worker = Stream(stub, accounts["admin"].token)
    worker.send(hello=hello("grpc-loras"))
    await worker.read()
    held = [_sha("style"), _sha("other"), _sha("style")]  # a repeat is stored once
    worker.send(loras=worker_pb2.Loras(sha256=held), request_id=1)
    answer = await worker.read()
    assert (answer.reply_to, answer.done.outcome) == (1, "advertised")
    key = queue.keys.worker_loras("grpc-loras")
    assert {m.decode() for m in await redis.smembers(key)} == {_sha("style"), _sha("other")}
    assert 0 < await redis.pttl(key) <= 15_000
    assert await redis.sismember(queue.keys.lora_holders(_sha("style")), "grpc-loras")
    # The claim's affinity: the younger job that uses a held LoRA goes first.
    plain, styled = await queue.submit_many(
        [{"service": "simulation", "payload": {"steps": 1}},
         {"service": "simulation", "payload": {"steps": 1}, "loras": [_lora("style")]}]
    )  # fmt: skip
    worker.send(ready=worker_pb2.Ready(), request_id=2)
    assert (await worker.read()).assignment.job_id == styled
    # A new advertisement replaces the last.
    worker.send(loras=worker_pb2.Loras(sha256=[_sha("other")]), request_id=3)
    assert (await worker.read()).done.outcome == "advertised"
    assert {m.decode() for m in await redis.smembers(key)} == {_sha("other")}
    assert not await redis.sismember(queue.keys.lora_holders(_sha("style")), "grpc-loras")
    await ended(worker)  # the worker leaves: the server withdraws what it held
    for _ in range(200):
        if not await redis.exists(key):
            break
        await asyncio.sleep(0.025)
    assert not await redis.exists(key)
    assert not await redis.sismember(queue.keys.lora_holders(_sha("other")), "grpc-loras")
    await queue.cancel(plain)


@pytest.mark.parametrize(
    ("hashes", "words"),
    [
        (["ABC"], "loras.sha256[0] must be a SHA-256 as 64 lowercase hex characters"),
        ([_sha("a"), _sha("b").upper()], "loras.sha256[1] must be a SHA-256"),
        ([_sha("a") + "0"], "loras.sha256[0] must be a SHA-256"),
        ([_sha(str(i)) for i in range(513)], "at most 512"),
    ],
)
async def test_bad_lora_hashes_are_invalid_argument_and_write_nothing(
    api: Api, stub: Any, accounts: dict[str, Account], hashes: list[str], words: str
) -> None:
    worker = Stream(stub, accounts["admin"].token)
    worker.send(hello=hello("grpc-bad-loras"))
    await worker.read()
    worker.send(loras=worker_pb2.Loras(sha256=hashes), request_id=1)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await worker.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in (info.value.details() or "")
    queue = api.services.queue
    assert not await api.services.redis.exists(queue.keys.worker_loras("grpc-bad-loras"))
    assert not await api.services.redis.exists(queue.keys.lora_holders(_sha("a")))
