"""A submit with an Idempotency-Key is one call of ``emp_submit``: the check and the submit are
atomic, so a retry returns the first job, concurrent retries submit once, a reused key with
another body is refused, and a refused submit records nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from core_factories import make_spec

from emp_core.errors import InvalidInput
from emp_core.queue.idempotency import IdempotencyKeyReused, IdempotencyRecord
from emp_core.queue.queue import Queue


def record(key: str = "order-1", body: Any = None, owner: str = "alice") -> IdempotencyRecord:
    return IdempotencyRecord.of(owner, key, body if body is not None else {"n": 1})


async def test_a_retry_returns_the_first_job_in_one_round_trip(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    execute = queue.redis.execute_command

    async def counting(*args: Any, **kwargs: Any) -> Any:
        sent.append(str(args[0]))
        return await execute(*args, **kwargs)

    monkeypatch.setattr(queue.redis, "execute_command", counting)
    first, replayed = await queue.submit_once(queue.prepare(make_spec()), record())
    assert not replayed
    assert sent == ["FCALL"]
    again, replayed = await queue.submit_once(queue.prepare(make_spec()), record())
    assert (again, replayed) == (first, True)
    assert sent == ["FCALL", "FCALL"]
    monkeypatch.undo()
    assert await queue.depth() == {"simulation": 1}
    ttl = await queue.redis.ttl(queue.keys.idempotency("alice", record().key_digest))
    assert 0 < ttl <= 24 * 3600


async def test_a_reused_key_with_another_body_is_refused(queue: Queue) -> None:
    await queue.submit_once(queue.prepare(make_spec()), record(body={"n": 1}))
    with pytest.raises(IdempotencyKeyReused) as info:
        await queue.submit_once(queue.prepare(make_spec()), record(body={"n": 2}))
    assert info.value.field == "Idempotency-Key"
    assert info.value.code == "idempotency_key_reused"
    assert await queue.depth() == {"simulation": 1}


async def test_keys_are_scoped_per_owner(queue: Queue) -> None:
    a, _ = await queue.submit_once(queue.prepare(make_spec()), record(owner="alice"))
    b, replayed = await queue.submit_once(queue.prepare(make_spec()), record(owner="bob"))
    assert a != b
    assert not replayed


async def test_concurrent_retries_submit_once(queue: Queue) -> None:
    outcomes = await asyncio.gather(
        *(queue.submit_once(queue.prepare(make_spec()), record()) for _ in range(20))
    )
    assert len({job_id for job_id, _ in outcomes}) == 1
    assert sorted(replayed for _, replayed in outcomes) == [False] + [True] * 19
    assert await queue.depth() == {"simulation": 1}


async def test_a_refused_submit_records_nothing(queue: Queue, redis: aioredis.Redis) -> None:
    # A workflow belongs to one customer: another customer's step is refused by the Lua.
    await queue.submit(make_spec(customer_id="alice", workflow_id="wf-1"))
    refused = queue.prepare(make_spec(customer_id="bob", workflow_id="wf-1"))
    with pytest.raises(InvalidInput) as info:
        await queue.submit_once(refused, record(owner="bob"))
    assert info.value.field == "workflow_id"
    assert not await redis.exists(queue.keys.idempotency("bob", record().key_digest))
    _, replayed = await queue.submit_once(queue.prepare(make_spec()), record(owner="bob"))
    assert not replayed


@pytest.mark.parametrize(
    ("tail", "field"),
    [
        (["bad owner", "a" * 32, "b" * 32, 60], "owner"),
        (["alice", "NOT-HEX" * 4, "b" * 32, 60], "key_digest"),
        (["alice", "a" * 32, "b", 60], "body_digest"),
        (["alice", "a" * 32, "b" * 32, 0], "ttl_s"),
        (["alice", "a" * 32, "b" * 32, 60], "keys"),  # the key names another digest
    ],
)
async def test_the_lua_checks_the_idempotency_arguments(
    queue: Queue, redis: aioredis.Redis, tail: list[Any], field: str
) -> None:
    job = queue.prepare(make_spec())
    keys, argv = queue.functions._submit_args([job])
    keys.append(queue.keys.idempotency("alice", "c" * 32 if field == "keys" else tail[1]))
    with pytest.raises(InvalidInput) as info:
        await queue.functions._call("emp_submit", keys, 1, 100, 60, *argv, *tail)
    assert info.value.field == field
    assert await queue.depth() == {}


def test_a_malformed_key_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(InvalidInput) as info:
        IdempotencyRecord.of("alice", "has space", {})
    assert info.value.field == "Idempotency-Key"
