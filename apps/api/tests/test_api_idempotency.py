"""Idempotency-Key: a retried submit returns the same job, even when the retries race."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from api_helpers import Api, job_body, running_api

from emp_core.queue.queue import Queue
from emp_core.settings import QueueSettings
from emp_web.testing import Account


async def _count(queue: Queue, account: Account) -> int:
    return int(await queue.redis.zcard(queue.keys.customer_jobs(account.user_id)))


async def _sent_twice(api: Api, headers: dict[str, str], body: dict[str, Any]) -> None:
    """The same request twice: one job, the second answer marked as a replay."""
    first = await api.http.post("/api/jobs", json=body, headers=headers)
    second = await api.http.post("/api/jobs", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"


async def _refused(api: Api, headers: dict[str, str], body: dict[str, Any]) -> None:
    reused = await api.http.post("/api/jobs", json=body, headers=headers)
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert reused.json()["error"]["field"] == "Idempotency-Key"


async def _burst(api: Api, headers: dict[str, str]) -> None:
    """Ten requests with one key at once: one job."""
    responses = await asyncio.gather(
        *(api.http.post("/api/jobs", json=job_body(), headers=headers) for _ in range(10))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1


async def test_retry_returns_the_same_job(
    api: Api, accounts: dict[str, Account], queue: Queue
) -> None:
    alice = accounts["alice"]
    headers = alice.headers | {"Idempotency-Key": "order-1"}
    await _sent_twice(api, headers, job_body())
    assert await _count(queue, alice) == 1
    await _refused(api, headers, job_body(priority=90))


async def test_concurrent_retries_submit_once(
    api: Api, accounts: dict[str, Account], queue: Queue
) -> None:
    alice = accounts["alice"]
    await _burst(api, alice.headers | {"Idempotency-Key": "burst"})
    assert await _count(queue, alice) == 1


async def test_keys_are_scoped_per_user(
    api: Api, accounts: dict[str, Account], queue: Queue
) -> None:
    a = await api.http.post(
        "/api/jobs", json=job_body(), headers=accounts["alice"].headers | {"Idempotency-Key": "k"}
    )
    b = await api.http.post(
        "/api/jobs", json=job_body(), headers=accounts["bob"].headers | {"Idempotency-Key": "k"}
    )
    assert a.json()["id"] != b.json()["id"]
    assert b.json()["customer_id"] == accounts["bob"].user_id


async def test_a_failed_submit_frees_its_key(
    api: Api, accounts: dict[str, Account], queue: Queue
) -> None:
    alice, bob = accounts["alice"], accounts["bob"]
    # A workflow belongs to the customer who started it: Bob's step is refused by the queue.
    await api.http.post("/api/jobs", json=job_body(workflow_id="wf-1"), headers=alice.headers)
    headers = bob.headers | {"Idempotency-Key": "retry-me"}
    refused = await api.http.post("/api/jobs", json=job_body(workflow_id="wf-1"), headers=headers)
    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "workflow_id"
    accepted = await api.http.post("/api/jobs", json=job_body(), headers=headers)
    assert accepted.status_code == 201
    bad_key = await api.http.post(
        "/api/jobs", json=job_body(), headers=bob.headers | {"Idempotency-Key": "has space"}
    )
    assert bad_key.json()["error"]["field"] == "Idempotency-Key"


@pytest.fixture
async def api2(routed: QueueSettings, database_url: str) -> AsyncIterator[Api]:
    async with running_api(routed, database_url) as running:
        yield running


async def test_a_key_reused_with_a_service_of_another_queue_is_refused(
    api2: Api, accounts: dict[str, Account], routed: QueueSettings, redis
) -> None:
    """``simulation`` goes to a queue of its own (``routed``): its key is still one key."""
    alice = accounts["alice"]
    headers = alice.headers | {"Idempotency-Key": "order-9"}
    await _sent_twice(api2, headers, job_body())
    await _refused(api2, headers, job_body(service="other"))
    # ... and the other way round: first the default queue, then the routed one.
    headers = alice.headers | {"Idempotency-Key": "order-10"}
    await _sent_twice(api2, headers, job_body(service="other"))
    await _refused(api2, headers, job_body())
    sim = Queue(redis, routed.model_copy(update={"queue": routed.queue_for("simulation")}))
    assert await _count(sim, alice) == 1
    assert await _count(Queue(redis, routed), alice) == 1


async def test_concurrent_routed_retries_submit_once(
    api2: Api, accounts: dict[str, Account], routed: QueueSettings, redis
) -> None:
    alice = accounts["alice"]
    await _burst(api2, alice.headers | {"Idempotency-Key": "burst"})
    sim = Queue(redis, routed.model_copy(update={"queue": routed.queue_for("simulation")}))
    assert await _count(sim, alice) == 1
