"""An Idempotency-Key over several queues (issue 13 item 2): one record, in the default queue,
answers for every queue, so a key reused with another service (another queue) is refused like a
key reused with another body. On one node and on a Redis Cluster (the queues in other slots)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from core_factories import make_spec, with_settings

from emp_core.errors import InvalidInput
from emp_core.jobs.job import JobSpec
from emp_core.queue.idempotency import IdempotencyKeyReused, IdempotencyRecord
from emp_core.queue.queues import Queues
from emp_core.settings import QueueSettings


@pytest.fixture
async def queues(redis: aioredis.Redis, settings: QueueSettings) -> Queues:
    """Three queues: ``simulation`` to ``…-gpu``, ``render`` to ``…-render``, others default."""
    q = settings.queue
    routes = {"simulation": f"{q}-gpu", "render": f"{q}-render"}
    qs = Queues(redis, with_settings(settings, queue_routes=routes))
    await qs.default.functions.load()
    return qs


def _record(spec: JobSpec, key: str = "order-1") -> IdempotencyRecord:
    return IdempotencyRecord.of("alice", key, spec.model_dump(mode="json"))


async def _once(queues: Queues, spec: JobSpec, key: str = "order-1") -> tuple[str, bool]:
    args = queues.for_service(spec.service).prepare(spec)
    return await queues.submit_once(args, _record(spec, key))


async def _jobs(queues: Queues) -> int:
    """Jobs in every queue (alice's index)."""
    return sum([int(await q.redis.zcard(q.keys.customer_jobs("alice"))) for q in queues])


@pytest.mark.parametrize(
    ("first", "then"),
    [("other", "simulation"), ("simulation", "other"), ("simulation", "render")],
    ids=["default-then-routed", "routed-then-default", "routed-then-routed"],
)
async def test_a_key_reused_with_another_service_is_refused(
    queues: Queues, first: str, then: str
) -> None:
    spec = make_spec(service=first, customer_id="alice")
    job_id, replayed = await _once(queues, spec)
    assert not replayed
    with pytest.raises(IdempotencyKeyReused, match="used with a different request") as caught:
        await _once(queues, make_spec(service=then, customer_id="alice"))
    assert caught.value.field == "Idempotency-Key"
    assert await _once(queues, spec) == (job_id, True)  # the first request, retried
    assert await _jobs(queues) == 1


async def test_a_routed_retry_returns_the_same_job_even_when_retries_race(queues: Queues) -> None:
    spec = make_spec(service="render", customer_id="alice")
    answers = await asyncio.gather(*(_once(queues, spec, "burst") for _ in range(10)))
    assert len({job_id for job_id, _ in answers}) == 1
    assert sum(not replayed for _, replayed in answers) <= 1
    assert await _jobs(queues) == 1
    job_id = answers[0][0]
    assert await queues.locate(job_id) is queues.for_service("render")


async def test_a_reservation_whose_submit_never_came_is_completed_by_the_retry(
    queues: Queues,
) -> None:
    """The first request reserved the key in the default queue and died before its job's queue
    heard of it: the retry submits the job under the reserved id, once."""
    spec = make_spec(service="simulation", customer_id="alice")
    record = _record(spec)
    home = queues.default
    key = home.keys.idempotency(record.owner_id, record.key_digest)
    await home.redis.set(key, f"reserved-1 {record.body_digest}", ex=60)
    assert await _once(queues, spec) == ("reserved-1", True)
    assert await _once(queues, spec) == ("reserved-1", True)
    assert (await queues.get("reserved-1")).service == "simulation"
    assert await _jobs(queues) == 1


async def test_a_job_redis_forgot_is_not_submitted_again(queues: Queues) -> None:
    spec = make_spec(service="simulation", customer_id="alice")
    record = _record(spec)
    home = queues.default
    await home.redis.set(
        home.keys.idempotency(record.owner_id, record.key_digest),
        f"archived-1 {record.body_digest}",
        ex=60,
    )
    args = queues.for_service("simulation").prepare(spec)

    async def archived(job_id: str) -> bool:
        return job_id == "archived-1"

    assert await queues.submit_once(args, record, archived=archived) == ("archived-1", True)
    assert await _jobs(queues) == 0


async def test_a_refused_routed_submit_frees_its_key(queues: Queues) -> None:
    # A workflow belongs to the customer who started it: bob's step is refused by the queue.
    await queues.submit(make_spec(service="simulation", customer_id="alice", workflow_id="wf"))
    refused = make_spec(service="simulation", customer_id="bob", workflow_id="wf")
    with pytest.raises(InvalidInput) as caught:
        await _once(queues, refused, "retry-me")
    assert caught.value.field == "workflow_id"
    fixed = make_spec(service="render", customer_id="bob")
    job_id, replayed = await _once(queues, fixed, "retry-me")
    assert not replayed
    assert (await queues.get(job_id)).service == "render"
