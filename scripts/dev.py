"""`make dev`: the whole stack on embedded defaults, in one terminal.

Starts a private redis-server with its data under .data/redis, loads the Function library,
migrates the SQLite database .data/emp.db to head, creates a dev admin on the first run, keeps
blobs (LoRAs) in .data/blobs (their signed URLs served by the API), starts the API
(127.0.0.1:8000), the studio (127.0.0.1:8001), two simulation workers and one diffusers worker
on the CPU (a tiny random-weight pipeline built once into .data/models; its images are
noise; EMP_DEV_DIFFUSERS_MODEL names a real diffusers folder instead), submits a few demo jobs
(one of them an image), prints the ready banner at once (it waits for no job) and then one line
per demo job state change. Ctrl-C stops everything: workers first (they hand back running jobs),
then the web apps, Redis last.

Output is never wrapped (``soft_wrap``): the password, the token and the "Try:" command stay on
one line each when the output goes to a file or a pipe, so they can be pasted back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError
from rich.console import Console

from emp_core.jobs.events import follow
from emp_core.queue.queue import Queue
from emp_core.redis.client import connect
from emp_core.redis.server import RedisServer
from emp_core.settings import QueueSettings
from emp_sql import Database, DatabaseSettings, Role, TokenRepository, UserRepository, migrate

ROOT = Path(__file__).resolve().parents[1]
# EMP_DEV_DATA and the EMP_DEV_*_PORT variables let a test run a second stack beside yours.
DATA = Path(os.environ.get("EMP_DEV_DATA", ROOT / ".data"))
REDIS_PORT = int(os.environ.get("EMP_DEV_REDIS_PORT", "6390"))
API_PORT = int(os.environ.get("EMP_DEV_API_PORT", "8000"))
STUDIO_PORT = int(os.environ.get("EMP_DEV_STUDIO_PORT", "8001"))
DB_URL = f"sqlite+aiosqlite:///{DATA / 'emp.db'}"
DEV_ADMIN = "admin@example.com"
WORKERS = 2
DEMO_JOBS: list[dict[str, Any]] = [
    {"service": "simulation", "priority": 80, "payload": {"steps": 10, "step_time": 0.3}},
    {"service": "simulation", "payload": {"steps": 20, "step_time": 0.2}},
    {"service": "simulation", "payload": {"steps": 8, "step_time": 0.25, "fail_with":
        "CUDA out of memory (demo)", "fail_times": 1}},
    {"service": "simulation", "priority": 10, "payload": {"steps": 5, "step_time": 0.4}},
    {"service": "diffusers", "payload": {"prompt": "a lighthouse at dusk", "width": 64,
        "height": 64, "steps": 20, "seed": 1}},
]  # fmt: skip

console = Console(soft_wrap=True, highlight=False)


def dev_secret(name: str) -> str:
    """A secret made on the first run and kept (mode 0600) under .data/, so restarts reuse it."""
    path = DATA / name
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


async def prepare_database(password: str) -> str | None:
    """Migrate the dev SQLite to head and make sure the dev admin exists with ``password``;
    returns an API token when the admin was created just now (tokens are shown once)."""
    settings = DatabaseSettings(database_url=DB_URL)
    await migrate.upgrade(settings)
    db = Database(settings)
    try:
        async with db.session() as session:
            users = UserRepository(session)
            admin = await users.by_email(DEV_ADMIN)
            if admin is None:
                admin = await users.create(DEV_ADMIN, password, role=Role.ADMIN)
                return (await TokenRepository(session).issue(admin, "make dev")).secret
            await users.set_password(admin, password)
            return None
    finally:
        await db.dispose()


def start_web(module: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``python -m module`` on 127.0.0.1:port (``wait_healthy`` waits for it)."""
    args = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(args, env=env, cwd=ROOT)  # noqa: S603 - our own module


def wait_healthy(name: str, proc: subprocess.Popen[bytes], port: int, *, tries: int = 600) -> None:
    """Wait until the process on ``port`` answers /health (a minute, on a loaded machine)."""
    for _ in range(tries):
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; is port {port} free?")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer on port {port}")


def diffusers_model() -> Path:
    """The model of the dev diffusers worker: EMP_DEV_DIFFUSERS_MODEL, or the tiny pipeline
    (built on the first run, about 15 s, kept in .data/models)."""
    if named := os.environ.get("EMP_DEV_DIFFUSERS_MODEL"):
        return Path(named)
    folder = DATA / "models" / "tiny-sd15"
    if not (folder / "model_index.json").exists():
        console.print(f"building the tiny random-weight diffusers pipeline in {folder} (once)")
        args = [sys.executable, "-m", "emp_worker.diffusion.tiny", str(folder)]
        subprocess.run(args, check=True, cwd=ROOT, capture_output=True)  # noqa: S603
    return folder


def start_workers(env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    procs = []
    for index in range(WORKERS):
        args = [sys.executable, "-m", "emp_worker.main", "--worker-id", f"dev-sim-{index}"]
        procs.append(subprocess.Popen(args, env=env, cwd=ROOT))  # noqa: S603 - our own module
    model = diffusers_model()
    args = [sys.executable, "-m", "emp_worker.main", "--worker-id", "dev-diffusers",
            "--service", "diffusers", "--diffusers-model", str(model)]  # fmt: skip
    procs.append(subprocess.Popen(args, env=env, cwd=ROOT))  # noqa: S603 - our own module
    return procs


async def submit_demo(settings: QueueSettings) -> list[str]:
    client = connect(settings.redis_url)
    try:
        return await Queue(client, settings).submit_many(DEMO_JOBS)
    finally:
        await client.aclose()


async def show_demo(settings: QueueSettings, ids: list[str]) -> None:
    """One line per state change of each demo job (progress events are left out)."""
    client = connect(settings.redis_url)

    async def watch(job_id: str) -> None:
        async for event in follow(client, settings.keys, job_id):
            if event.type == "progress":
                continue
            note = f" on {event.worker_id}" if event.worker_id else ""
            if event.error:
                note += f": {event.error}"
            console.print(f"demo job {job_id[:8]}: {event.type.value}{note}", markup=False)

    try:
        await asyncio.gather(*(watch(i) for i in ids))
    finally:
        await client.aclose()


def watch_demo_in_background(settings: QueueSettings, ids: list[str]) -> None:
    """Follow the demo jobs beside the main loop; a job that fails never holds anything up."""

    def run() -> None:
        with contextlib.suppress(RedisError, OSError, RuntimeError):
            asyncio.run(show_demo(settings, ids))

    threading.Thread(target=run, name="demo-jobs", daemon=True).start()


def main() -> int:
    redis = RedisServer(DATA / "redis", port=REDIS_PORT, persist=True)
    console.print(f"starting redis-server on port {REDIS_PORT} (data in {redis.directory})")
    redis.start()
    password = dev_secret("dev-admin-password")
    env = {
        **os.environ,
        "EMP_REDIS_URL": redis.url,
        "EMP_DATABASE_URL": DB_URL,
        "EMP_STUDIO_SECRET_KEY": dev_secret("studio-secret-key"),
        # LoRAs (and later outputs) in a local folder; the API serves their signed URLs.
        "EMP_BLOB_URL": f"file://{DATA / 'blobs'}",
        "EMP_BLOB_SIGNING_KEY": dev_secret("blob-signing-key"),
        "EMP_BLOB_PUBLIC_URL": f"http://127.0.0.1:{API_PORT}/blobs",
        "EMP_STUDIO_DEV": "true",  # plain HTTP on 127.0.0.1: the session cookie is not Secure
        "PYTHONUNBUFFERED": "1",
    }
    settings = QueueSettings(redis_url=redis.url)
    workers: list[subprocess.Popen[bytes]] = []
    web: list[subprocess.Popen[bytes]] = []
    try:

        async def load() -> None:
            client = connect(redis.url)
            version = await Queue(client, settings).functions.load()
            console.print(f"emp library v{version} loaded")
            await client.aclose()

        asyncio.run(load())
        token = asyncio.run(prepare_database(password))
        console.print(f"SQLite migrated to head ({DATA / 'emp.db'})")
        # Everything starts at once (each process spends seconds importing); then wait for the
        # web apps to answer. Workers need no wait: jobs submitted before they start just queue.
        web.append(api := start_web("emp_api.main", API_PORT, env))
        web.append(studio := start_web("emp_studio.main", STUDIO_PORT, env))
        workers.extend(start_workers(env))
        console.print(
            f"starting the API, the studio, {WORKERS} simulation workers and a diffusers worker"
        )
        wait_healthy("the API", api, API_PORT)
        wait_healthy("the studio", studio, STUDIO_PORT)
        ids = asyncio.run(submit_demo(settings))
        token_line = (
            f"API token of the dev admin (shown once): [bold]{token}[/]"
            if token
            else f"a new API token: EMP_DATABASE_URL={DB_URL} uv run emp tokens create "
            f"--email {DEV_ADMIN}"
        )
        console.print(
            "\n[bold green]The stack is running.[/]\n"
            f"  studio: http://127.0.0.1:{STUDIO_PORT}  sign in as {DEV_ADMIN} / {password}\n"
            f"  LoRAs:  http://127.0.0.1:{STUDIO_PORT}/loras (files under {DATA / 'blobs'})\n"
            f"  images: http://127.0.0.1:{STUDIO_PORT}/generate (diffusers on the CPU)\n"
            f"  API:    http://127.0.0.1:{API_PORT}/docs\n  {token_line}\n"
            f"  Redis:  {redis.url}\n"
            f"  demo:   {len(ids)} jobs submitted (one fails once on purpose and is retried); "
            "their state changes follow below\n"
            "Try, in another terminal:\n"
            f"  EMP_REDIS_URL={redis.url} uv run emp submit --service simulation "
            "--payload '{\"steps\": 5}' --wait\n"
            "Ctrl-C stops everything.\n"
        )
        watch_demo_in_background(settings, ids)
        while all(proc.poll() is None for proc in [*workers, *web]):
            time.sleep(1)
        console.print("[red]a process of the stack exited[/]; stopping the stack")
    except KeyboardInterrupt:
        pass
    except RedisError as exc:
        # Also what redis-py raises when Ctrl-C lands in the middle of a blocking read.
        console.print(f"[red]Redis: {exc}[/]; stopping the stack")
    finally:
        # A second Ctrl-C (or the SIGTERM a terminal sends along) must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        console.print("stopping workers (running jobs go back to the queue), then Redis")
        for proc in workers:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                proc.wait(35)
            except subprocess.TimeoutExpired:
                proc.kill()
        for proc in web:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        redis.stop()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
