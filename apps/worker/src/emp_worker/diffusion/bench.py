"""Diffusers connector benchmark: seconds per step of a pipeline, and what the connector and the
whole worker add on top of the bare pipeline on the same model in the same run.

    make bench-diffusers    (uv run python -m emp_worker.diffusion.bench [--model DIR] [--size 64]
                             [--steps 20] [--runs 3])

Without ``--model`` it builds the tiny random-weight SD1.5-architecture pipeline (``.data/models``).
Three ways, each ``--runs`` times after one warm-up, minimum kept:
- bare: ``pipe(...)`` with the same arguments and a no-op step callback;
- connector: ``DiffusersConnector.run`` (thread, step reports, previews, PNG, blob write);
- worker: a real worker on a private Redis: submit, claim, progress events, complete.
Overhead is (connector or worker job time - bare) / bare. LoRA load and unload times come from
the connector's own timings with the tiny LoRA.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import AsyncIterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from emp_core.jobs.job import Job, JobStatus
from emp_core.jobs.payloads import parse_diffusers
from emp_core.jobs.requirements import Requirements
from emp_core.queue.queue import Queue
from emp_core.redis.client import connect
from emp_core.redis.server import RedisServer
from emp_core.settings import QueueSettings
from emp_worker.config import WorkerSettings
from emp_worker.connectors.base import LocalLora, RecordingContext
from emp_worker.connectors.diffusers import DiffusersConnector
from emp_worker.diffusion.tiny import build_tiny_lora, build_tiny_pipeline
from emp_worker.worker import Worker

ROOT = Path.cwd()  # make runs it from the repository root


class _Blobs:
    """Outputs kept in memory: the benchmark measures the worker, not a disk."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    async def put(self, path: str, chunks: AsyncIterable[bytes], *, overwrite: bool = True) -> int:
        self.blobs[path] = b"".join([c async for c in chunks])
        return len(self.blobs[path])

    async def delete(self, path: str) -> bool:
        return self.blobs.pop(path, None) is not None

    async def signed_url(self, path: str, *, ttl_s: int) -> str:
        return f"memory://{path}"


def _job(payload: dict[str, Any]) -> Job:
    return Job(
        id=uuid.uuid4().hex, service="diffusers", status=JobStatus.RUNNING, priority=50,
        payload=payload, requirements=Requirements(), max_attempts=1, timeout_s=3600,
        attempts=1, created_at=datetime.now(UTC), class_id="bench",
    )  # fmt: skip


def _bare(connector: DiffusersConnector, payload: dict[str, Any]) -> float:
    import torch

    p = parse_diffusers(payload)
    pipe = connector.pipeline.pipe
    started = time.perf_counter()
    pipe(
        prompt=p.prompt, width=p.width, height=p.height, num_inference_steps=p.steps,
        guidance_scale=p.guidance, generator=torch.Generator("cpu").manual_seed(1),
        callback_on_step_end=lambda _p, _i, _t, kw: kw, output_type="pil",
    )  # fmt: skip
    return time.perf_counter() - started


async def _connector(connector: DiffusersConnector, payload: dict[str, Any]) -> float:
    started = time.perf_counter()
    await connector.run(_job(payload), RecordingContext())
    return time.perf_counter() - started


async def _worker(connector: DiffusersConnector, payload: dict[str, Any], runs: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            redis = connect(server.url)
            qs = QueueSettings(redis_url=server.url, queue=f"b{uuid.uuid4().hex[:8]}")
            queue = Queue(redis, qs)
            await queue.functions.load()
            times = []
            for _ in range(runs):
                job_id = await queue.submit({"service": "diffusers", "payload": payload})
                ws = WorkerSettings(
                    redis_url=server.url, queue=qs.queue, services=["diffusers"], burst=True,
                    worker_id=f"bench-{uuid.uuid4().hex[:6]}",
                )  # fmt: skip
                worker = Worker(ws, redis=redis, connectors={"diffusers": connector})
                await worker.run()
                job = await queue.get(job_id)
                assert job.claimed_at is not None
                assert job.finished_at is not None
                times.append((job.finished_at - job.claimed_at).total_seconds())
            await redis.aclose()
            return times
        finally:
            server.stop()


async def main_async(args: argparse.Namespace) -> None:
    models = ROOT / ".data" / "models"
    model = args.model or build_tiny_pipeline(models / "tiny-sd15")
    lora = build_tiny_lora(
        build_tiny_pipeline(models / "tiny-sd15"), models / "loras" / "tiny-lora.safetensors"
    )
    blobs = _Blobs()
    connector = DiffusersConnector.from_folder(model, model_name="bench", outputs=blobs)
    started = time.perf_counter()
    await connector.warm()
    load_s = time.perf_counter() - started
    payload = {"prompt": "a lighthouse", "width": args.size, "height": args.size,
               "steps": args.steps, "seed": 1, "preview_every": 5}  # fmt: skip
    # The bare pipeline in a thread of its own too, as the connector runs it (torch on the CPU
    # is much slower from the event loop's thread on a busy machine).
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as pool:
        await loop.run_in_executor(pool, _bare, connector, payload)  # warm-up
        bare = min([await loop.run_in_executor(pool, _bare, connector, payload)
                    for _ in range(args.runs)])  # fmt: skip
    conn = min([await _connector(connector, payload) for _ in range(args.runs)])
    work = min(await _worker(connector, payload, args.runs))

    # LoRA: load/unload from the connector's timings when the job carries the tiny LoRA.
    async def one_lora(job: Any, ctx: Any) -> list[LocalLora]:
        return [LocalLora(lora, 1.0, "tiny")]

    with_lora = DiffusersConnector(
        connector.pipeline, model_name="bench", outputs=blobs, loras=one_lora
    )
    result: Any = await with_lora.run(_job(payload), RecordingContext())
    t = result["timings"]
    rows = [
        ("model load (s)", f"{load_s:.2f}"),
        (f"bare pipeline, {args.steps} steps at {args.size}px (s)", f"{bare:.3f}"),
        ("bare s/step", f"{bare / args.steps:.4f}"),
        ("connector job (s)", f"{conn:.3f}"),
        ("connector overhead vs bare", f"{100 * (conn - bare) / bare:+.1f}%"),
        ("worker job, claim to complete (s)", f"{work:.3f}"),
        ("worker overhead vs bare", f"{100 * (work - bare) / bare:+.1f}%"),
        ("LoRA load (s)", f"{t['lora_load_s']:.3f}"),
        ("LoRA unload (s)", f"{t['lora_unload_s']:.3f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\ndiffusers benchmark ({connector.pipeline.device}, model {model})")
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description="diffusers connector benchmark")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
