"""The end-to-end suite's stack: the real apps as subprocesses on free ports, and Chromium.

Once per session: a private redis-server, a SQLite file migrated with Alembic, three accounts made
through the core repositories (and an API token for one), then ``emp-studio``, ``emp-api`` and two
simulation ``emp-worker`` processes, each started the way a person would start it. Their logs go
to the session's temporary folder and are printed when a process fails to come up.

The browser is Debian's Chromium (``scripts/ensure-chromium.sh``): Playwright's own download
cannot reach its CDN from these machines.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from e2e_helpers import PASSWORD, Person, Stack
from playwright.sync_api import expect

from emp_core.queue.keys import Keys
from emp_core.redis.server import RedisServer, free_port
from emp_sql import Database, DatabaseSettings, Role, TokenRepository, UserRepository, migrate

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
QUEUE = "e2e"
WORKERS = 2
# Beside the simulation workers, one diffusers worker on the tiny random-weight pipeline (CPU).
ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ROOT / ".data" / "models" / "tiny-sd15"
START_TIMEOUT = 45.0
MODEL_TIMEOUT = 240.0


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


async def _people(database_url: str) -> dict[str, Person]:
    db = Database(DatabaseSettings(database_url=database_url))
    people: dict[str, Person] = {}
    try:
        async with db.session() as session:
            users, tokens = UserRepository(session), TokenRepository(session)
            for name, role in (("alice", Role.USER), ("bob", Role.USER), ("admin", Role.ADMIN)):
                user = await users.create(f"{name}@example.com", PASSWORD, role=role)
                issued = await tokens.issue(user, "e2e")
                people[name] = Person(user.email, user.id, issued.secret)
    finally:
        await db.dispose()
    return people


def _run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to the end on a thread of its own: Playwright's sync API may already
    hold an event loop on this one."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _start(name: str, args: list[str], env: dict[str, str], folder: Path) -> _Process:
    log = folder / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", *args], env=env, cwd=folder, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return _Process(name, popen, log)


def _wait_healthy(process: _Process, url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited early:\n{process.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{process.name} did not answer {url} in time:\n{process.tail()}")


def _wait_workers(redis_url: str, count: int, processes: list[_Process], deadline: float) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        while time.monotonic() < deadline:
            if int(client.zcard(Keys(queue=QUEUE).workers())) >= count:
                return
            for process in processes:
                if process.popen.poll() is not None:
                    raise RuntimeError(f"{process.name} exited early:\n{process.tail()}")
            time.sleep(0.1)
    finally:
        client.close()
    raise RuntimeError("the workers did not register in time")


def _stop(processes: list[_Process]) -> None:
    for process in processes:
        if process.popen.poll() is None:
            process.popen.terminate()
    for process in processes:
        try:
            process.popen.wait(10)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure-chromium.sh", pytrace=False)
    folder = Path(tmp_path_factory.mktemp("e2e"))
    server = RedisServer(folder / "redis").start()
    processes: list[_Process] = []
    try:
        database_url = f"sqlite+aiosqlite:///{folder / 'emp.db'}"
        _run(migrate.upgrade(DatabaseSettings(database_url=database_url)))
        people = _run(_people(database_url))
        studio_port, api_port = free_port(), free_port()
        env = {
            **os.environ,
            "EMP_REDIS_URL": server.url,
            "EMP_DATABASE_URL": database_url,
            "EMP_QUEUE": QUEUE,
            "EMP_STUDIO_SECRET_KEY": secrets.token_hex(32),
            "EMP_STUDIO_DEV": "true",  # plain HTTP: the session cookie may not be Secure
            # Quick retries and reaping, so a failing job runs out of attempts in a second.
            "EMP_RETRY_BASE_SECONDS": "0.2",
            "EMP_RETRY_AVOID_GRACE_SECONDS": "0.2",
            "EMP_REAP_INTERVAL_SECONDS": "0.5",
            # Error-pattern match counts reach SQL (and the admin pages) within a second.
            "EMP_API_PATTERN_FOLD_SECONDS": "0.5",
            # LoRAs and outputs in a local folder; the API serves their signed URLs.
            "EMP_BLOB_URL": f"file://{folder / 'blobs'}",
            "EMP_BLOB_SIGNING_KEY": secrets.token_hex(32),
            "EMP_BLOB_PUBLIC_URL": f"http://127.0.0.1:{api_port}/blobs",
            # The workers' LoRA caches start empty with every run (ADR-010).
            "EMP_LORA_CACHE_DIR": str(folder / "loras"),
            "PYTHONUNBUFFERED": "1",
        }
        # Built once and kept under .data/ (as make dev and the worker tests do).
        subprocess.run(
            [sys.executable, "-m", "emp_worker.diffusion.tiny", str(TINY_MODEL)],
            check=True, capture_output=True,
        )  # fmt: skip
        processes.append(
            _start("studio", ["emp_studio.main", "--port", str(studio_port)], env, folder)
        )
        processes.append(_start("api", ["emp_api.main", "--port", str(api_port)], env, folder))
        for index in range(WORKERS):
            args = ["emp_worker.main", "--worker-id", f"e2e-sim-{index}", "--grace", "1"]
            processes.append(_start(f"worker-{index}", args, env, folder))
        diffusers = ["emp_worker.main", "--worker-id", "e2e-diffusers", "--grace", "1",
                     "--service", "diffusers", "--diffusers-model", str(TINY_MODEL),
                     "--diffusers-model-name", "tiny"]  # fmt: skip
        processes.append(_start("worker-diffusers", diffusers, env, folder))
        deadline = time.monotonic() + START_TIMEOUT
        studio = f"http://127.0.0.1:{studio_port}"
        api = f"http://127.0.0.1:{api_port}"
        _wait_healthy(processes[0], f"{studio}/health", deadline)
        _wait_healthy(processes[1], f"{api}/health", deadline)
        # The diffusers worker registers once torch and its model are loaded: tens of seconds
        # on a busy 2-core machine.
        _wait_workers(server.url, WORKERS + 1, processes[2:], time.monotonic() + MODEL_TIMEOUT)
        yield Stack(studio, api, server.url, people, env)
    finally:
        _stop(processes)
        server.stop()


# --- pytest-playwright ------------------------------------------------------------------------
# Playwright's default of 5 s is short on a shared 2-core machine running suites in parallel.
expect.set_options(timeout=10_000)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def base_url(stack: Stack) -> str:
    """Relative URLs in ``page.goto`` go to the studio."""
    return stack.studio


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(autouse=True)
def _no_script_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a flow whose page logged a script error or a blocked resource (a CSP violation,
    say); the expected answers of the flows themselves (a 404 page, a 401 sign-in) are not
    errors of the page."""
    if "page" not in request.fixturenames:
        yield
        return
    page = request.getfixturevalue("page")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            errors.append(f"console: {msg.text}")
            if msg.type == "error" and not re.search(r"status of (401|404|422)", msg.text)
            else None
        ),
    )
    yield
    assert not errors, "\n".join(errors)
