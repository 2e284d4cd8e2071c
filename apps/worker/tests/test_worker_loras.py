"""A worker fetches a job's LoRAs from a real HTTP server before its connector runs, reports the
download as the job's progress, keeps the file for the next job, advertises what it holds, and
fails a job whose LoRA is gone for good with a message that says so."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

from worker_helpers import eventually, job_events, make_worker_settings

from emp_core.jobs.job import JobStatus
from emp_core.queue.queue import Queue
from emp_worker.worker import Worker


def lora(server: Any, name: str, size: int, *, scope: str = "user") -> dict[str, Any]:
    data = os.urandom(size)
    sha = hashlib.sha256(data).hexdigest()
    server.files[f"/b/{sha}"] = data
    return {
        "id": f"id-{name}", "name": f"{name}.safetensors", "sha256": sha, "size": size,
        "scope": scope, "url": server.url(f"/b/{sha}?sig=x"), "weight": 0.7,
    }  # fmt: skip


def job_with(*loras: dict[str, Any]) -> dict[str, Any]:
    return {"service": "simulation", "payload": {"steps": 1}, "loras": list(loras)}


async def test_a_job_gets_its_loras_as_local_files_downloaded_once(
    redis, queue: Queue, settings, file_server, tmp_path: Path
) -> None:
    style = lora(file_server, "my-style", 3 * 2**20)
    first = await queue.submit(job_with(style))
    worker = Worker(make_worker_settings(settings, lora_cache_dir=tmp_path), redis=redis)
    await worker.run()

    job = await queue.get(first)
    assert job.status is JobStatus.COMPLETED
    (used,) = job.result["loras"]
    assert used == {
        "name": "my-style.safetensors", "sha256": style["sha256"], "weight": 0.7,
        "bytes": 3 * 2**20,
    }  # fmt: skip
    downloads = [
        e["message"] for e in await job_events(redis, queue, first) if e["type"] == "progress"
    ]
    assert downloads[0].startswith("downloading my-style.safetensors ")
    assert "downloading my-style.safetensors 100%" in downloads

    # The same worker again (same cache folder): the file is reused, not downloaded.
    second = await queue.submit(job_with(style))
    worker = Worker(
        make_worker_settings(settings, lora_cache_dir=tmp_path, worker_id=worker.id), redis=redis
    )
    await worker.run()
    assert (await queue.get(second)).status is JobStatus.COMPLETED
    assert file_server.hits[f"/b/{style['sha256']}"] == 1
    messages = [e.get("message", "") for e in await job_events(redis, queue, second)]
    assert not any(m.startswith("downloading") for m in messages)


async def test_the_worker_advertises_the_hashes_it_holds(
    redis, queue: Queue, settings, file_server, tmp_path: Path
) -> None:
    a, b = lora(file_server, "a", 1000), lora(file_server, "b", 1000, scope="shared")
    worker = Worker(
        make_worker_settings(settings, lora_cache_dir=tmp_path, burst=False), redis=redis
    )
    runner = asyncio.create_task(worker.run())
    await worker.ready.wait()
    job_id = await queue.submit(job_with(a, b))
    key = queue.keys.worker_loras(worker.id)

    async def advertised() -> bool:
        members = {m.decode() for m in await redis.smembers(key)}
        return members == {a["sha256"], b["sha256"]}

    async def done() -> bool:
        return (await queue.get(job_id)).status is JobStatus.COMPLETED

    await eventually(done)
    await eventually(advertised)
    assert await redis.pttl(key) > 0
    worker.stop()
    await runner
    assert not await redis.exists(key)  # withdrawn on a clean exit


async def test_a_deleted_lora_fails_the_job_for_good_with_a_clear_message(
    redis, queue: Queue, settings, file_server, tmp_path: Path
) -> None:
    gone = lora(file_server, "deleted-style", 1000)
    del file_server.files[f"/b/{gone['sha256']}"]
    job_id = await queue.submit(job_with(gone) | {"max_attempts": 3})
    worker = Worker(make_worker_settings(settings, lora_cache_dir=tmp_path), redis=redis)
    stats = await worker.run()

    job = await queue.get(job_id)
    assert job.status is JobStatus.FAILED
    assert job.attempts == 1  # not retried: the same link would answer the same
    assert job.error is not None
    assert "LoRA deleted-style.safetensors (id id-deleted-style)" in job.error
    assert "no longer available (HTTP 404)" in job.error
    assert (stats.failed, stats.retried) == (1, 0)
    assert list((tmp_path / worker.id / "blobs").iterdir()) == []
