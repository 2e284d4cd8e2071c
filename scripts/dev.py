"""`make dev`: the whole stack on embedded defaults, in one terminal.

Starts a private redis-server with its data under .data/redis, loads the Function library, starts
two simulation workers, submits a few demo jobs and shows their progress. Ctrl-C stops everything:
workers first (they hand back running jobs), Redis last.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from emp_core.events import follow
from emp_core.queue import Queue
from emp_core.redis_server import RedisServer
from emp_core.settings import QueueSettings

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".data"
REDIS_PORT = int(os.environ.get("EMP_DEV_REDIS_PORT", "6390"))
WORKERS = 2
DEMO_JOBS = [
    {"service": "simulation", "priority": 80, "payload": {"steps": 10, "step_time": 0.3}},
    {"service": "simulation", "payload": {"steps": 20, "step_time": 0.2}},
    {"service": "simulation", "payload": {"steps": 8, "step_time": 0.25, "fail_with":
        "CUDA out of memory (demo)", "fail_times": 1}},
    {"service": "simulation", "priority": 10, "payload": {"steps": 5, "step_time": 0.4}},
]  # fmt: skip

console = Console()


def start_workers(env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    procs = []
    for index in range(WORKERS):
        args = [sys.executable, "-m", "emp_worker.main", "--worker-id", f"dev-sim-{index}"]
        procs.append(subprocess.Popen(args, env=env, cwd=ROOT))  # noqa: S603 - our own module
    return procs


async def show_demo(settings: QueueSettings) -> None:
    client = aioredis.Redis.from_url(settings.redis_url)
    queue = Queue(client, settings)
    ids = await queue.submit_many(DEMO_JOBS)
    console.print(f"submitted {len(ids)} demo jobs")
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[note]}"), console=console,
    ) as bar:  # fmt: skip

        async def watch(job_id: str) -> None:
            task = bar.add_task(f"job {job_id[:8]}", total=100, note="pending")
            async for event in follow(client, settings.keys, job_id):
                note = event.type.value + (f" on {event.worker_id}" if event.worker_id else "")
                if event.error:
                    note += f": {event.error}"
                done = 100 if event.type == "completed" else event.progress or 0
                bar.update(task, completed=done, note=note)

        await asyncio.gather(*(watch(i) for i in ids))
    await client.aclose()


def main() -> int:
    redis = RedisServer(DATA / "redis", port=REDIS_PORT, persist=True)
    console.print(f"starting redis-server on port {REDIS_PORT} (data in {redis.directory})")
    redis.start()
    env = {**os.environ, "EMP_REDIS_URL": redis.url, "PYTHONUNBUFFERED": "1"}
    settings = QueueSettings(redis_url=redis.url)
    workers: list[subprocess.Popen[bytes]] = []
    try:

        async def load() -> None:
            client = aioredis.Redis.from_url(redis.url)
            version = await Queue(client, settings).functions.load()
            console.print(f"emp library v{version} loaded")
            await client.aclose()

        asyncio.run(load())
        workers = start_workers(env)
        console.print(f"started {len(workers)} simulation workers")
        asyncio.run(show_demo(settings))
        console.print(
            "\n[bold green]The stack is running.[/] Redis: "
            f"{redis.url}\nTry: EMP_REDIS_URL={redis.url} uv run emp submit --service simulation "
            "--payload '{\"steps\": 5}' --wait\nCtrl-C stops everything."
        )
        while all(proc.poll() is None for proc in workers):
            time.sleep(1)
        console.print("[red]a worker exited[/]; stopping the stack")
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping workers (running jobs go back to the queue), then Redis")
        for proc in workers:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                proc.wait(35)
            except subprocess.TimeoutExpired:
                proc.kill()
        redis.stop()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
