"""``make bench-sockets``: a burst of WebSockets opened at once on one job, in one API process and
in one studio process (issue 12): how many are served, how long until all are open, and whether
every socket gets every event of the job to its end.

Each app runs as its own process (``python -m emp_api.main`` / ``emp_studio.main``, one process,
default settings) on a private redis-server and a fresh SQLite file. The client opens ``--sockets``
sockets at once (default 1,000), then a worker claims the job, reports progress and completes it;
each API socket must receive submitted, claimed, progress and completed and a 1000 close, each
studio socket the completed page part and a 1000 close.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
from rich.console import Console
from rich.table import Table
from websockets.asyncio.client import connect

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.queue import Queue
from emp_core.redis.client import connect as redis_connect
from emp_core.redis.server import RedisServer, free_port
from emp_core.settings import QueueSettings
from emp_sql import Database, DatabaseSettings, TokenRepository, UserRepository, migrate

QUEUE = "benchsockets"
PASSWORD = "bench password only"


@dataclass
class Outcome:
    app: str
    sockets: int
    served: int = 0
    complete: int = 0
    open_s: float = 0.0
    end_s: float = 0.0
    errors: str = ""


async def _account(database_url: str) -> tuple[str, str]:
    settings = DatabaseSettings(database_url=database_url)
    await migrate.upgrade(settings)
    db = Database(settings)
    try:
        async with db.session() as session:
            user = await UserRepository(session).create("bench@example.com", PASSWORD)
            return user.email, (await TokenRepository(session).issue(user, "bench")).secret
    finally:
        await db.dispose()


@contextlib.asynccontextmanager
async def _serve(module: str, env: dict[str, str]):  # type: ignore[no-untyped-def]
    port = free_port()
    args = [sys.executable, "-m", module, "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(args, env=env)  # noqa: ASYNC220 - started once
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{base}/health")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 20)


async def _follow(url: str, headers: dict[str, str], origin: str | None, opened: list[float],
                  studio: bool) -> bool:  # fmt: skip
    async with connect(url, additional_headers=headers, origin=origin, open_timeout=120,  # type: ignore[arg-type]
                       max_size=2**22) as ws:  # fmt: skip
        opened.append(time.perf_counter())
        frames = [frame async for frame in ws]
        if ws.close_code != 1000:
            return False
        if studio:
            return 'data-testid="job-status">completed' in str(frames[-1])
        types = [orjson.loads(f)["type"] for f in frames]
        return types == ["submitted", "claimed", "progress", "completed"]


async def _burst(app: str, host: str, job_id: str, headers: dict[str, str], n: int,
                 queue: Queue) -> Outcome:  # fmt: skip
    outcome = Outcome(app, n)
    opened: list[float] = []
    origin = f"http://{host}" if app == "studio" else None
    url = f"ws://{host}/ws/jobs/{job_id}"
    start = time.perf_counter()
    tasks = [asyncio.create_task(_follow(url, headers, origin, opened, app == "studio"))
             for _ in range(n)]  # fmt: skip
    while len(opened) + sum(t.done() for t in tasks) < n:  # noqa: ASYNC110 - opened or refused
        await asyncio.sleep(0.05)
    outcome.served = len(opened)
    outcome.open_s = time.perf_counter() - start
    caps = WorkerCapabilities(worker_id="bench-w", services=["simulation"])
    claimed = (await queue.claim(caps)).claimed
    assert claimed is not None
    ended = time.perf_counter()
    await queue.progress(claimed, 50, "half way")
    await queue.complete(claimed, {"text": "done"})
    results = await asyncio.gather(*tasks, return_exceptions=True)
    outcome.end_s = time.perf_counter() - ended
    outcome.complete = sum(1 for r in results if r is True)
    failures = {type(r).__name__ for r in results if isinstance(r, BaseException)}
    outcome.errors = ", ".join(sorted(failures))
    return outcome


async def _studio_cookie(host: str, email: str) -> str:
    async with httpx.AsyncClient(base_url=f"http://{host}") as client:
        page = await client.get("/signin")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf
        data = {"csrf_token": csrf.group(1), "email": email, "password": PASSWORD}
        await client.post("/signin", data=data)
        return f"emp_session={client.cookies.get('emp_session')}"


async def run(n: int) -> list[Outcome]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * n + 256)), hard))
    folder = Path(tempfile.mkdtemp(prefix="emp-bench-sockets-"))
    server = RedisServer(folder).start()
    database_url = f"sqlite+aiosqlite:///{folder}/emp.db"
    email, token = await _account(database_url)
    env = {**os.environ, "EMP_REDIS_URL": server.url, "EMP_QUEUE": QUEUE,
           "EMP_DATABASE_URL": database_url, "EMP_STUDIO_DEV": "true",
           "EMP_STUDIO_SECRET_KEY": os.urandom(24).hex()}  # fmt: skip
    redis = redis_connect(server.url)
    queue = Queue(redis, QueueSettings(redis_url=server.url, queue=QUEUE))
    outcomes = []
    try:
        await queue.functions.load()
        auth = {"Authorization": f"Bearer {token}"}
        async with _serve("emp_api.main", env) as host, httpx.AsyncClient() as http:
            body = {"service": "simulation", "payload": {"steps": 1}}
            job = (await http.post(f"http://{host}/api/jobs", json=body, headers=auth)).json()
            outcomes.append(await _burst("api", host, job["id"], auth, n, queue))
        async with _serve("emp_studio.main", env) as host:
            cookie = {"Cookie": await _studio_cookie(host, email)}
            owner = await _user_id(database_url)
            job_id = await queue.submit({"service": "simulation", "customer_id": owner})
            outcomes.append(await _burst("studio", host, job_id, cookie, n, queue))
    finally:
        await redis.aclose()
        server.stop()
    return outcomes


async def _user_id(database_url: str) -> str:
    db = Database(DatabaseSettings(database_url=database_url))
    try:
        async with db.session() as session:
            user = await UserRepository(session).by_email("bench@example.com")
            assert user is not None
            return user.id
    finally:
        await db.dispose()


def render(outcomes: list[Outcome], console: Console) -> None:
    table = Table(title="WebSocket burst on one job (one process per app)")
    for column in ("app", "sockets", "served", "all events + 1000", "all open after",
                   "all ended after the last event", "client errors"):  # fmt: skip
        table.add_column(column, justify="right" if column != "app" else "left")
    for o in outcomes:
        table.add_row(o.app, f"{o.sockets:,}", f"{o.served:,}", f"{o.complete:,}",
                      f"{o.open_s:.2f} s", f"{o.end_s:.2f} s", o.errors or "—")  # fmt: skip
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.sockets", description=__doc__)
    parser.add_argument("--sockets", type=int, default=1000)
    args = parser.parse_args(argv)
    outcomes = asyncio.run(run(args.sockets))
    render(outcomes, Console())
    if any(o.complete != o.sockets for o in outcomes):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
