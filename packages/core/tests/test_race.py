"""Claims racing for the same jobs: the claim is one atomic Lua call, so exactly one wins."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import redis.asyncio as aioredis
from core_factories import event_types, make_caps, make_spec

from emp_core.queue.queue import ClaimedJob, Queue
from emp_core.redis import connect
from emp_core.settings import QueueSettings


async def test_many_clients_race_for_one_job(
    queue: Queue, redis: aioredis.Redis, settings: QueueSettings
) -> None:
    job_id = await queue.submit(make_spec())
    clients = [connect(settings.redis_url) for _ in range(8)]
    try:
        queues = [Queue(c, settings) for c in clients]
        workers = [make_caps(worker_id=f"w{i}") for i in range(len(queues) * 4)]
        results = await asyncio.gather(
            *(queues[i % len(queues)].claim(w) for i, w in enumerate(workers))
        )
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    winners = [r.claimed for r in results if r.claimed is not None]
    assert len(winners) == 1
    assert winners[0].id == job_id
    job = await queue.get(job_id)
    assert job.attempts == 1
    assert job.worker_id == winners[0].job.worker_id
    assert await redis.get(queue.keys.fence()) == b"1"
    assert (await event_types(redis, queue.keys, job_id)).count("claimed") == 1


async def test_threads_with_their_own_connections_race_for_one_job(
    queue: Queue, settings: QueueSettings
) -> None:
    job_id = await queue.submit(make_spec())
    barrier = threading.Barrier(6)
    won: list[str] = []
    lock = threading.Lock()

    async def claim(worker_id: str) -> None:
        client = connect(settings.redis_url)
        try:
            q = Queue(client, settings)
            caps = make_caps(worker_id=worker_id)
            await client.ping()  # connect before the barrier, so the claims really race
            barrier.wait()
            result = await q.claim(caps)
            if result.claimed is not None:
                with lock:
                    won.append(result.claimed.id)
        finally:
            await client.aclose()

    threads = [threading.Thread(target=asyncio.run, args=(claim(f"t{i}"),)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert won == [job_id]


async def test_workers_draining_together_take_each_job_once(
    queue: Queue, settings: QueueSettings
) -> None:
    ids = await queue.submit_many([make_spec() for _ in range(200)])
    clients = [connect(settings.redis_url) for _ in range(10)]
    taken: list[ClaimedJob] = []

    async def work(q: Queue, worker_id: str) -> None:
        caps = make_caps(worker_id=worker_id)
        while (result := await q.claim(caps)).claimed is not None:
            taken.append(result.claimed)
            await q.complete(result.claimed, {"by": worker_id})

    try:
        await asyncio.gather(*(work(Queue(c, settings), f"w{i}") for i, c in enumerate(clients)))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    counts = Counter(c.id for c in taken)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1
    assert len({c.token for c in taken}) == len(ids)
    statuses = {(await queue.get(i)).status for i in ids}
    assert statuses == {"completed"}
    assert await queue.depth() == {}
