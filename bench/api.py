"""HTTP API figures for ``make bench``: submit throughput through one API process, and the latency
from a worker's progress call to a WebSocket client with 1,000 sockets open on that process.

``measure(redis_url)`` starts the API (``uvicorn emp_api.app:create_app --factory``, one process)
against that Redis and a fresh SQLite file, with an admin token made for the run, and returns raw
numbers; ``figures(raw)`` turns them into ``bench.report.Figure`` rows. ``python -m bench.api``
runs it alone on a private redis-server.

- **Submit**: ``CONNECTIONS`` keep-alive connections each POST ``/api/jobs`` back to back. The
  client is a few lines of asyncio HTTP/1.1 rather than a general-purpose library, so that the
  client's CPU (it shares the machine with the API and Redis) does not set the figure.
- **Progress → socket**: 1,000 jobs are claimed and a socket follows each (``/ws/jobs/{id}``);
  a worker reports progress on them round-robin at ``EVENT_RATE`` per second, and each socket
  timestamps the event on arrival. One clock (``perf_counter``) on both ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from rich.console import Console
from websockets.asyncio.client import ClientConnection, connect

from bench.report import Figure, latency_summary, machine, render
from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.queue import ClaimedJob, Queue
from emp_core.redis.server import RedisServer, free_port
from emp_core.settings import QueueSettings
from emp_sql import Database, DatabaseSettings, Role, TokenRepository, UserRepository, migrate

QUEUE = "benchapi"
CONNECTIONS = 32
SOCKETS = 1_000
EVENT_RATE = 500  # progress events per second across all sockets: each job reports every 2 s
_BODY = orjson.dumps({"service": "simulation", "payload": {"prompt": "a lighthouse", "steps": 20}})
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


# --- set-up ---------------------------------------------------------------------------------------
async def _admin_token(database_url: str) -> tuple[str, str]:
    settings = DatabaseSettings(database_url=database_url)
    await migrate.upgrade(settings)
    db = Database(settings)
    try:
        async with db.session() as session:
            user = await UserRepository(session).create(
                "bench@example.com", "benchmark only", role=Role.ADMIN
            )
            issued = await TokenRepository(session).issue(user, "bench")
        return user.id, issued.secret
    finally:
        await db.dispose()


class _ApiProcess:
    """One ``uvicorn`` process serving the API on a free port."""

    def __init__(self, redis_url: str, database_url: str) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "EMP_REDIS_URL": redis_url,
            "EMP_QUEUE": QUEUE,
            "EMP_DATABASE_URL": database_url,
            # The submit figure is the process's capacity, not one user's allowance: with the
            # default per-user limit (200/s) most of the bench's requests were answered 429.
            "EMP_API_SUBMIT_LIMITS": "",
        }
        self.process: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> _ApiProcess:
        args = [sys.executable, "-m", "uvicorn", "emp_api.app:create_app", "--factory",
                "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
                "--no-access-log"]  # fmt: skip
        self.process = subprocess.Popen(args, env=self.env)  # noqa: ASYNC220 - started once
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.base}/health")).status_code == 200:
                        return self
                await asyncio.sleep(0.05)
        raise RuntimeError("the API did not become healthy in 15 s")

    async def __aexit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            await asyncio.to_thread(self.process.wait, 10)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


# --- submit throughput ----------------------------------------------------------------------------
class _KeepAlive:
    """HTTP/1.1 over one connection, one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> _KeepAlive:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return int(head[9:12])

    def close(self) -> None:
        self.writer.close()


async def submit_throughput(port: int, token: str, *, jobs: int, api_pid: int) -> dict[str, Any]:
    request = (
        b"POST /api/jobs HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
    )
    conns = [await _KeepAlive.open(port) for _ in range(CONNECTIONS)]
    statuses: dict[int, int] = {}

    async def loop(conn: _KeepAlive, count: int) -> None:
        for _ in range(count):
            status = await conn.post(request)
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(loop(c, 20) for c in conns))  # warm-up: caches, connections, JIT-free
    statuses.clear()
    per_conn = jobs // CONNECTIONS
    cpu0, started = _cpu_seconds(api_pid), time.perf_counter()
    await asyncio.gather(*(loop(c, per_conn) for c in conns))
    elapsed = time.perf_counter() - started
    api_cpu = (_cpu_seconds(api_pid) - cpu0) / elapsed
    for conn in conns:
        conn.close()
    # Only accepted submits count: a refusal (429, 5xx) is cheaper than a job and would flatter
    # the rate; any is reported beside the figure.
    done = statuses.get(201, 0)
    return {"jobs": done, "seconds": elapsed, "rate": done / elapsed, "statuses": statuses,
            "connections": CONNECTIONS, "api_cpu": api_cpu}  # fmt: skip


# --- progress to socket ---------------------------------------------------------------------------
async def progress_latency(
    api: _ApiProcess, queue: Queue, token: str, owner: str, *, samples: int
) -> dict[str, Any]:
    ids = await queue.submit_many(
        [{"service": "benchws", "customer_id": owner, "payload": {}}] * SOCKETS
    )
    caps = WorkerCapabilities(worker_id="bench-ws", services=["benchws"])
    claimed: list[ClaimedJob] = []
    for _ in ids:
        result = await queue.claim(caps)
        assert result.claimed is not None
        claimed.append(result.claimed)

    sent: dict[str, float] = {}
    drained = asyncio.Event()  # every event sent so far has arrived
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    ready = 0

    async def follow(job: ClaimedJob, opened: asyncio.Semaphore) -> None:
        nonlocal ready
        async with opened:
            socket: ClientConnection = await connect(
                f"ws://127.0.0.1:{api.port}/ws/jobs/{job.id}", additional_headers=headers,
                max_queue=None,
            )  # fmt: skip
        async with socket:
            for _ in range(2):  # the replay: submitted, claimed
                await socket.recv()
            ready += 1
            async for message in socket:
                event = orjson.loads(message)
                if event["type"] == "progress" and (t0 := sent.pop(event["message"], None)):
                    latencies.append(time.perf_counter() - t0)
                    if not sent:
                        drained.set()

    opened = asyncio.Semaphore(64)
    readers = [asyncio.create_task(follow(job, opened)) for job in claimed]
    while ready < SOCKETS:
        await asyncio.sleep(0.05)
        if any(r.done() for r in readers):
            next(r for r in readers if r.done()).result()

    gap = 1 / EVENT_RATE
    cpu0, started = _cpu_seconds(api.pid), time.perf_counter()
    for n in range(samples):
        job = claimed[n % SOCKETS]
        key = str(n)
        sent[key] = time.perf_counter()
        await queue.progress(job, n % 100, key)
        delay = started + (n + 1) * gap - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    drained.clear()
    if sent:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drained.wait(), 5)
    elapsed = time.perf_counter() - started
    api_cpu = (_cpu_seconds(api.pid) - cpu0) / elapsed
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    return {"sockets": SOCKETS, "rate": EVENT_RATE, "lost": len(sent), "api_cpu": api_cpu,
            **latency_summary(latencies)}  # fmt: skip


# --- the entry points -----------------------------------------------------------------------------
async def measure(redis_url: str, *, quick: bool = False) -> dict[str, Any]:
    """Run both measurements against the Redis at ``redis_url``; returns raw numbers."""
    redis = Redis.from_url(redis_url)
    settings = QueueSettings(redis_url=redis_url, queue=QUEUE, lease_seconds=600)
    queue = Queue(redis, settings)
    await queue.functions.load()
    with tempfile.TemporaryDirectory(prefix="emp-bench-api-") as directory:
        database_url = f"sqlite+aiosqlite:///{directory}/emp.db"
        owner, token = await _admin_token(database_url)
        try:
            async with _ApiProcess(redis_url, database_url) as api:
                submit = await submit_throughput(
                    api.port, token, jobs=3_000 if quick else 12_000, api_pid=api.pid
                )
                latency = await progress_latency(
                    api, queue, token, owner, samples=1_000 if quick else 4_000
                )
        finally:
            await redis.aclose()
    return {"submit": submit, "progress_to_socket": latency}


def _cpu(share: float) -> str:
    return f"API process CPU {share:.0%}"


def _refused(statuses: dict[Any, int]) -> str:
    """`` · 12 answered 429`` for the answers other than 201 (JSON keys are strings)."""
    others = {int(k): n for k, n in statuses.items() if int(k) != 201}
    return "".join(f" · {n:,} answered {code}" for code, n in sorted(others.items()))


def figures(raw: dict[str, Any]) -> list[Figure]:
    submit, ws = raw["submit"], raw["progress_to_socket"]
    where = f"{ws['sockets']:,} sockets, {ws['rate']} events/s"
    return [
        # Issue 10 raised this target from 1,500 to 2,000 jobs/s.
        Figure("api_submit", "HTTP submit, one API process", submit["rate"], "jobs/s", 2_000,
               note=f"{submit['connections']} keep-alive connections · {_cpu(submit['api_cpu'])}"
               + _refused(submit["statuses"]),
               detail=submit),
        Figure("api_ws_p50", f"progress→WebSocket p50, {where}", ws["p50_ms"], "ms",
               note=_cpu(ws["api_cpu"]), detail=ws),
        Figure("api_ws_p99", f"progress→WebSocket p99, {where}", ws["p99_ms"], "ms", 50.0,
               note=f"max {ws['max_ms']:.1f} ms · {ws['lost']} lost of {ws['n'] + ws['lost']}"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the work")
    args = parser.parse_args(argv)
    console = Console(width=max(132, Console().width))
    with (
        tempfile.TemporaryDirectory(prefix="emp-bench-") as directory,
        RedisServer(Path(directory)) as server,
    ):
        raw = asyncio.run(measure(server.url, quick=args.quick))
        info = redis_info(server.url)
    render(figures(raw), machine(info), console)
    return 0


def redis_info(url: str) -> dict[str, Any]:
    client = SyncRedis.from_url(url)
    try:
        return dict(client.info("server"))
    finally:
        client.close()


if __name__ == "__main__":
    raise SystemExit(main())
