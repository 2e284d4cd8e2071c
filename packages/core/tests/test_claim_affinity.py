"""LoRA affinity in the claim (ADR-010): priority first, then the LoRAs the worker holds (+10 per
user LoRA, +5 per shared one), then age; never blocking; optional patience and window; and a
claim's work that does not grow with the number of distinct LoRAs pending."""

from __future__ import annotations

import hashlib
from typing import Any

import redis.asyncio as aioredis
from core_factories import (
    claim_one,
    claimed_id,
    cold_library,
    make_caps,
    make_spec,
    with_settings,
)

from emp_core.loras.advert import advertise_loras
from emp_core.queue.queue import Queue
from emp_core.settings import QueueSettings


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def lora(name: str, scope: str = "user") -> dict[str, Any]:
    return {
        "id": name, "name": f"{name}.safetensors", "sha256": sha(name), "size": 100,
        "scope": scope, "url": f"http://blobs.invalid/{name}",
    }  # fmt: skip


def job(*loras: dict[str, Any], priority: int = 50) -> Any:
    return make_spec(priority=priority, loras=list(loras))


async def hold(queue: Queue, worker_id: str, *names: str) -> None:
    await advertise_loras(
        queue.redis, queue.keys, worker_id, [sha(n) for n in names], ttl_ms=60_000
    )


async def drain(queue: Queue, worker_id: str) -> list[str]:
    caps = make_caps(worker_id=worker_id)
    order = []
    while (job_id := await claimed_id(queue, caps)) is not None:
        order.append(job_id)
    return order


async def test_priority_then_affinity_then_age(queue: Queue) -> None:
    await hold(queue, "w1", "mine", "popular")
    ids = await queue.submit_many(
        [
            job(),  # 0: no LoRAs, oldest
            job(lora("someone-elses")),  # 0
            job(lora("popular", "shared")),  # 5
            job(lora("mine")),  # 10
            job(lora("mine"), lora("popular", "shared")),  # 15
            job(lora("mine")),  # 10, younger than 3
            job(priority=60),  # a higher priority beats any affinity
        ]
    )
    assert await drain(queue, "w1") == [ids[i] for i in (6, 4, 3, 5, 2, 0, 1)]


async def test_a_worker_holding_nothing_takes_jobs_in_plain_order(queue: Queue) -> None:
    await hold(queue, "w1", "mine")
    ids = await queue.submit_many([job(lora("mine")), job(), job(lora("mine"))])
    assert await drain(queue, "w2") == ids


async def test_never_blocking_a_job_whose_loras_another_worker_holds_is_taken(
    queue: Queue,
) -> None:
    await hold(queue, "w1", "mine")
    job_id = await queue.submit(job(lora("mine")))
    assert await claimed_id(queue, make_caps(worker_id="w2")) == job_id


async def test_a_job_is_left_to_an_idle_worker_that_holds_its_lora_for_the_grace(
    queue: Queue, redis: aioredis.Redis, settings: QueueSettings
) -> None:
    q = Queue(redis, with_settings(settings, affinity_grace_seconds=30))
    await hold(q, "w1", "mine")
    await redis.hset(q.keys.worker("w1"), mapping={"state": "idle"})
    left, plain = await q.submit_many([job(lora("mine")), job()])
    w2 = make_caps(worker_id="w2")
    assert await claimed_id(q, w2) == plain
    result = await q.claim(w2)
    assert result.claimed is None
    assert result.retry_in is not None
    assert 0 < result.retry_in <= 30
    # A busy holder is not waited for (no window): w2 takes the job.
    await redis.hset(q.keys.worker("w1"), "state", "busy")
    assert await claimed_id(q, w2) == left


async def test_an_idle_holder_is_waited_for_only_the_grace(
    queue: Queue, redis: aioredis.Redis, settings: QueueSettings
) -> None:
    q = Queue(redis, with_settings(settings, affinity_grace_seconds=30))
    await hold(q, "w1", "mine")
    await redis.hset(q.keys.worker("w1"), mapping={"state": "idle"})
    job_id = await q.submit(job(lora("mine")))
    created = int(await redis.hget(q.keys.job(job_id), "created_at") or 0)
    await redis.hset(q.keys.job(job_id), "created_at", created - 31_000)
    assert await claimed_id(q, make_caps(worker_id="w2")) == job_id


async def test_completing_a_job_claims_the_next_by_affinity(queue: Queue) -> None:
    await hold(queue, "w1", "mine")
    first, plain, affine = await queue.submit_many([job(priority=60), job(), job(lora("mine"))])
    caps = make_caps(worker_id="w1")
    claimed = await claim_one(queue, caps)
    assert claimed.id == first
    following = await queue.complete(claimed, {}, then_claim=caps)
    assert following.claimed is not None
    assert following.claimed.id == affine
    assert await claimed_id(queue, caps) == plain


async def test_a_job_past_its_patience_goes_before_affine_ones(
    queue: Queue, redis: aioredis.Redis, settings: QueueSettings
) -> None:
    q = Queue(redis, with_settings(settings, affinity_patience_seconds=60))
    await hold(q, "w1", "mine")
    waited, affine, plain = await q.submit_many([job(), job(lora("mine")), job()])
    created = int(await redis.hget(q.keys.job(waited), "created_at") or 0)
    await redis.hset(q.keys.job(waited), "created_at", created - 61_000)  # pending for 61 s
    assert await drain(q, "w1") == [waited, affine, plain]


async def test_affinity_off_is_plain_order(
    queue: Queue, redis: aioredis.Redis, settings: QueueSettings
) -> None:
    q = Queue(redis, with_settings(settings, affinity_scan=0))
    await hold(q, "w1", "mine")
    ids = await q.submit_many([job(), job(lora("mine"))])
    assert await drain(q, "w1") == ids


async def test_the_window_holds_a_job_for_the_worker_that_has_its_lora(
    queue: Queue, redis: aioredis.Redis, settings: QueueSettings
) -> None:
    q = Queue(redis, with_settings(settings, affinity_window_seconds=30))
    await hold(q, "w1", "mine")
    held_back, plain = await q.submit_many([job(lora("mine")), job()])
    w2 = make_caps(worker_id="w2")
    assert await claimed_id(q, w2) == plain  # w2 leaves the job to w1
    result = await q.claim(w2)
    assert result.claimed is None
    assert result.retry_in is not None
    assert 0 < result.retry_in <= 30
    # Once it has waited out the window, any worker takes it.
    created = int(await redis.hget(q.keys.job(held_back), "created_at") or 0)
    await redis.hset(q.keys.job(held_back), "created_at", created - 31_000)
    assert await claimed_id(q, w2) == held_back


async def test_the_window_does_not_hold_a_job_nobody_holds_the_loras_of(
    queue: Queue, redis: aioredis.Redis, settings: QueueSettings
) -> None:
    q = Queue(redis, with_settings(settings, affinity_window_seconds=30))
    await hold(q, "w1", "mine")
    job_id = await q.submit(job(lora("nobodys")))
    assert await claimed_id(q, make_caps(worker_id="w2")) == job_id


async def test_advertising_keeps_the_holder_sets_by_difference(queue: Queue) -> None:
    r, k = queue.redis, queue.keys
    await hold(queue, "w1", "a", "b")
    await hold(queue, "w2", "b")
    await hold(queue, "w1", "b", "c")  # a evicted, c downloaded
    assert not await r.exists(k.lora_holders(sha("a")))
    assert await r.smembers(k.lora_holders(sha("b"))) == {b"w1", b"w2"}
    assert await r.smembers(k.lora_holders(sha("c"))) == {b"w1"}
    assert await r.smembers(k.worker_loras("w1")) == {sha("b").encode(), sha("c").encode()}


async def _claim_commands(
    redis: aioredis.Redis, queue: Queue, distinct: int, jobs: int = 10_000
) -> dict[str, int]:
    """Per-command call counts of one claim over ``jobs`` pending jobs using ``distinct`` LoRAs."""
    await hold(queue, "w1", *(f"held-{i}" for i in range(512)))
    for start in range(0, jobs, 1000):
        await queue.submit_many(
            [job(lora(f"l{i % distinct}"), lora(f"s{i % distinct}", "shared"))
             for i in range(start, start + 1000)]
        )  # fmt: skip
    await redis.config_resetstat()
    assert await claimed_id(queue, make_caps(worker_id="w1")) is not None
    stats = await redis.info("commandstats")
    return {name: int(v["calls"]) for name, v in stats.items()}


async def test_claim_work_does_not_grow_with_distinct_loras(
    private_redis: aioredis.Redis, settings: QueueSettings
) -> None:
    """Counted by Redis itself (INFO commandstats), with the window on so that every check the
    affinity can make is made: the same commands for 10 distinct LoRAs as for 10,000."""
    counts = []
    for distinct in (10, 10_000):
        await private_redis.flushall()
        q = Queue(private_redis, with_settings(settings, affinity_window_seconds=30, queue="b"))
        await cold_library(q)
        counts.append(await _claim_commands(private_redis, q, distinct))
    assert counts[0] == counts[1]
    # The affinity read at most `affinity_scan` jobs, each with one SMISMEMBER.
    assert counts[0]["cmdstat_smismember"] <= settings.affinity_scan


async def test_a_worker_holding_no_lora_reads_no_other_job(
    private_redis: aioredis.Redis, settings: QueueSettings
) -> None:
    """With no LoRA held every job's affinity is 0: the claim looks at its plain choice (whether
    the grace holds it back) and at no other job of the band, so a no-LoRA claim stays cheap."""
    q = Queue(private_redis, with_settings(settings, queue="n"))
    await q.functions.load()
    ids = await q.submit_many([job() for _ in range(3 * settings.affinity_scan)])
    await private_redis.config_resetstat()
    assert await claimed_id(q, make_caps(worker_id="w-empty")) == ids[0]
    stats = await private_redis.info("commandstats")
    # One HMGET for the plain choice's grace check; the claim's own reads of its job hash.
    assert int(stats["cmdstat_hmget"]["calls"]) < settings.affinity_scan // 2
    assert "cmdstat_smismember" not in stats
