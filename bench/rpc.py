"""``make bench-grpc``: gRPC against JSON REST/WebSocket, same machine, same run, one API process
serving both (``emp-api`` with its gRPC port).

- **Payload size**: the bytes of a submit request and its response, and of one progress event,
  as each protocol puts them on the wire in its body: JSON for REST and the WebSocket, protobuf
  for gRPC (HTTP/1.1 and HTTP/2 headers are not counted on either side).
- **Submit latency**: ``SAMPLES`` submits one at a time over one kept-alive connection (REST:
  a few lines of raw HTTP/1.1; gRPC: a ``grpc.aio`` stub on one channel), p50/p99.
- **Progress delivery**: one job followed at once by a WebSocket (``/ws/jobs/{id}``) and a
  ``WatchJob`` stream; a worker reports progress every 10 ms and each side timestamps arrival
  (one ``perf_counter`` clock), p50/p99.
- **Worker throughput** (``bench/rpc_workers.py``): a burst ``emp-worker`` draining N no-op jobs
  on the Redis transport, then on the gRPC transport through this API process, 1 and 4 slots.

``python -m bench.rpc [--quick]`` runs it on a private redis-server and a temporary SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table
from websockets.asyncio.client import connect

from bench.api import _admin_token, _ApiProcess, _KeepAlive
from bench.report import latency_summary
from bench.rpc_workers import worker_throughput
from emp.v1 import job_pb2, job_pb2_grpc
from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.queue import Queue
from emp_core.redis.server import RedisServer, free_port
from emp_core.settings import QueueSettings
from emp_rpc.metadata import bearer

QUEUE = "benchapi"
_PAYLOAD = {"prompt": "a lighthouse at dusk, oil on canvas", "steps": 20, "seed": 1234567,
            "width": 1024, "height": 1024, "cfg": 7.5}  # fmt: skip


async def _rest_submit(port: int, token: str, samples: int) -> tuple[list[float], int, int]:
    body = orjson.dumps({"service": "simulation", "payload": _PAYLOAD})
    request = (
        b"POST /api/jobs HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    conn = await _KeepAlive.open(port)
    # The response's size, read once the same way the client sees it.
    conn.writer.write(request)
    head = await conn.reader.readuntil(b"\r\n\r\n")
    length = next(int(x[15:]) for x in head.split(b"\r\n") if x[:15].lower() == b"content-length:")
    await conn.reader.readexactly(length)
    for _ in range(50):  # warm-up
        await conn.post(request)
    latencies = []
    for _ in range(samples):
        t0 = time.perf_counter()
        status = await conn.post(request)
        latencies.append(time.perf_counter() - t0)
        assert status == 201, status
    conn.close()
    return latencies, len(body), length


async def _grpc_submit(stub: Any, token: str, samples: int) -> tuple[list[float], int, int]:
    request = job_pb2.SubmitJobRequest(
        service="simulation", payload_json=orjson.dumps(_PAYLOAD).decode()
    )
    metadata = bearer(token)
    reply = await stub.SubmitJob(request, metadata=metadata)
    for _ in range(50):
        await stub.SubmitJob(request, metadata=metadata)
    latencies = []
    for _ in range(samples):
        t0 = time.perf_counter()
        await stub.SubmitJob(request, metadata=metadata)
        latencies.append(time.perf_counter() - t0)
    return latencies, request.ByteSize(), reply.ByteSize()


async def _progress(
    api: _ApiProcess, stub: Any, queue: Queue, token: str, owner: str, samples: int
) -> dict[str, Any]:
    await queue.submit({"service": "benchrpc", "customer_id": owner, "payload": {}})
    result = await queue.claim(WorkerCapabilities(worker_id="bench-rpc", services=["benchrpc"]))
    assert result.claimed is not None
    job = result.claimed
    sent: dict[str, float] = {}
    arrivals: dict[str, dict[str, float]] = {"ws": {}, "grpc": {}}
    sizes: dict[str, int] = {}
    ready = {"ws": asyncio.Event(), "grpc": asyncio.Event()}

    async def by_socket() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        url = f"ws://127.0.0.1:{api.port}/ws/jobs/{job.id}"
        async with connect(url, additional_headers=headers, max_queue=None) as socket:
            async for message in socket:
                event = orjson.loads(message)
                if event["type"] == "claimed":
                    ready["ws"].set()
                if event["type"] == "progress":
                    arrivals["ws"][event["message"]] = time.perf_counter()
                    sizes["ws"] = len(message)

    async def by_grpc() -> None:
        watch = job_pb2.WatchJobRequest(job_id=job.id)
        async for item in stub.WatchJob(watch, metadata=bearer(token)):
            if item.event.type == job_pb2.EVENT_TYPE_CLAIMED:
                ready["grpc"].set()
            if item.event.type == job_pb2.EVENT_TYPE_PROGRESS:
                arrivals["grpc"][item.event.message] = time.perf_counter()
                sizes["grpc"] = item.ByteSize()

    readers = [asyncio.create_task(by_socket()), asyncio.create_task(by_grpc())]
    await asyncio.gather(*(e.wait() for e in ready.values()))
    for n in range(samples):
        key = str(n)
        sent[key] = time.perf_counter()
        await queue.progress(job, n % 100, key)
        await asyncio.sleep(0.01)
    for _ in range(200):
        if all(len(a) == samples for a in arrivals.values()):
            break
        await asyncio.sleep(0.025)
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    out: dict[str, Any] = {"sizes": sizes}
    for side, got in arrivals.items():
        out[side] = latency_summary([got[k] - t for k, t in sent.items() if k in got])
        out[side]["lost"] = samples - len(got)
    return out


@contextlib.asynccontextmanager
async def _started(api: _ApiProcess) -> AsyncIterator[_ApiProcess]:
    """The API process, healthy (a loaded 2-core machine may take a while), stopped after."""
    args = [sys.executable, "-m", "uvicorn", "emp_api.app:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(api.port), "--log-level", "warning",
            "--no-access-log"]  # fmt: skip
    api.process = subprocess.Popen(args, env=api.env)  # noqa: ASYNC220 - started once
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(1200):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{api.base}/health")).status_code == 200:
                        break
                if api.process.poll() is not None:
                    raise RuntimeError("the API process exited during start-up")
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the API did not become healthy in 60 s")
        yield api
    finally:
        api.process.terminate()
        await asyncio.to_thread(api.process.wait, 10)


async def measure(redis_url: str, *, quick: bool = False) -> dict[str, Any]:
    samples = 300 if quick else 1_500
    redis = Redis.from_url(redis_url)
    queue = Queue(redis, QueueSettings(redis_url=redis_url, queue=QUEUE, lease_seconds=600))
    await queue.functions.load()
    with tempfile.TemporaryDirectory(prefix="emp-bench-rpc-") as directory:
        database_url = f"sqlite+aiosqlite:///{directory}/emp.db"
        owner, token = await _admin_token(database_url)
        api = _ApiProcess(redis_url, database_url)
        grpc_port = free_port()
        api.env["EMP_API_GRPC_PORT"] = str(grpc_port)
        api.env["EMP_WEBHOOK_RUN_DISPATCHER"] = "false"
        try:
            async with (
                _started(api),
                grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
            ):
                await asyncio.wait_for(channel.channel_ready(), 15)
                stub = job_pb2_grpc.JobServiceStub(channel)
                # First, while the queue holds no other simulation jobs for the workers to meet.
                workers = await worker_throughput(
                    queue, f"127.0.0.1:{grpc_port}", token, jobs=400 if quick else 2_000
                )
                rest = await _rest_submit(api.port, token, samples)
                rpc = await _grpc_submit(stub, token, samples)
                progress = await _progress(api, stub, queue, token, owner, samples)
        finally:
            await redis.aclose()
    return {
        "samples": samples,
        "submit": {
            "rest": {
                **latency_summary(rest[0]),
                "request_bytes": rest[1],
                "response_bytes": rest[2],
            },
            "grpc": {**latency_summary(rpc[0]), "request_bytes": rpc[1], "response_bytes": rpc[2]},
        },
        "progress": progress,
        "workers": workers,
    }


def _submit_figures(measured: tuple[list[float], int, int]) -> dict[str, Any]:
    latencies, request_bytes, response_bytes = measured
    sizes = {"request_bytes": request_bytes, "response_bytes": response_bytes}
    return {**latency_summary(latencies), **sizes}


def render(raw: dict[str, Any], console: Console) -> None:
    table = Table(title=f"gRPC vs REST/WebSocket · one API process · {raw['samples']} samples each")
    for column in ("measure", "REST / WebSocket", "gRPC", "gRPC vs JSON"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    s, p = raw["submit"], raw["progress"]

    def row(label: str, a: float, b: float, unit: str) -> None:
        fmt = "{:,.0f}" if unit == "B" else "{:.2f}"
        ratio = f"{a / b:.2f}× smaller" if unit == "B" else f"{(b - a) / a:+.0%}"
        table.add_row(label, fmt.format(a) + f" {unit}", fmt.format(b) + f" {unit}", ratio)

    row("submit request body", s["rest"]["request_bytes"], s["grpc"]["request_bytes"], "B")
    row("submit response body", s["rest"]["response_bytes"], s["grpc"]["response_bytes"], "B")
    row("progress event", p["sizes"].get("ws", 0), p["sizes"].get("grpc", 1), "B")
    row("submit p50", s["rest"]["p50_ms"], s["grpc"]["p50_ms"], "ms")
    row("submit p99", s["rest"]["p99_ms"], s["grpc"]["p99_ms"], "ms")
    row("progress → client p50", p["ws"]["p50_ms"], p["grpc"]["p50_ms"], "ms")
    row("progress → client p99", p["ws"]["p99_ms"], p["grpc"]["p99_ms"], "ms")
    table.add_row("events lost", str(p["ws"]["lost"]), str(p["grpc"]["lost"]), "")
    workers = raw["workers"]
    for key in sorted({k.split("_")[1] for k in workers}, key=int):
        redis, rpc = workers[f"redis_{key}"], workers[f"grpc_{key}"]
        table.add_row(
            f"worker jobs/s, {key} slot{'' if key == '1' else 's'} †",
            f"{redis['rate']:,.0f} /s", f"{rpc['rate']:,.0f} /s",
            f"{(rpc['rate'] - redis['rate']) / redis['rate']:+.0%}",
        )  # fmt: skip
    jobs = next(iter(workers.values()))["jobs"]
    table.caption = (
        f"† a burst emp-worker draining {jobs:,} no-op jobs; left column: the Redis transport"
    )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rpc", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fifth of the samples")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="emp-bench-redis-") as directory:
        server = RedisServer(Path(directory)).start()
        try:
            raw = asyncio.run(measure(server.url, quick=args.quick))
        finally:
            server.stop()
    render(raw, Console())
    out = Path(__file__).parent / "results" / "grpc-latest.json"
    with contextlib.suppress(OSError):
        out.write_text(orjson.dumps(raw, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
