"""No token in any log line (issue 12, defect 2): a real ``emp-api`` process, logging at DEBUG,
is sent tokens every way a client can (header, the deprecated ``?token=``, a ticket, tokens that
are wrong), and every line it wrote is searched for each of them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from api_helpers import job_body
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from emp_core.redis.server import free_port
from emp_core.settings import QueueSettings
from emp_sql.tokens import new_token
from emp_web.testing import create_account


@asynccontextmanager
async def _emp_api(settings: QueueSettings, database_url: str, log: Path) -> AsyncIterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "EMP_REDIS_URL": settings.redis_url,
        "EMP_QUEUE": settings.queue,
        "EMP_DATABASE_URL": database_url,
    }
    args = [sys.executable, "-m", "emp_api.main", "--port", str(port), "--log-level", "debug"]
    with log.open("wb") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: ASYNC220
        base = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient() as client:
                for _ in range(1200):  # a loaded machine takes many seconds to import the app
                    assert process.poll() is None, "emp-api exited during start-up; see its log"
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"{base}/health")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
            yield f"127.0.0.1:{port}"
        finally:
            process.terminate()
            await asyncio.to_thread(process.wait, 20)


async def test_no_issued_token_reaches_the_log(
    settings: QueueSettings, database_url: str, tmp_path: Path
) -> None:
    user = await create_account(database_url, name="logged")
    admin = await create_account(database_url, name="logged-admin", admin=True)
    unknown = new_token()  # shaped like a token, issued to no one
    secrets = [user.token, admin.token, unknown]
    log = tmp_path / "api.log"
    async with _emp_api(settings, database_url, log) as host:
        async with httpx.AsyncClient(base_url=f"http://{host}") as http:
            job = (await http.post("/api/jobs", json=job_body(), headers=user.headers)).json()
            await http.get(f"/api/jobs?token={user.token}", headers=user.headers)
            await http.get("/api/jobs", headers={"Authorization": f"Bearer {unknown}"})
            ticket = (await http.post("/api/ws-tickets", headers=user.headers)).json()["ticket"]
            secrets.append(ticket)
        ws = f"ws://{host}/ws/jobs/{job['id']}"
        for url in (f"{ws}?token={user.token}", f"{ws}?ticket={ticket}"):
            async with connect(url) as socket:
                await asyncio.wait_for(socket.recv(), 10)
        for url in (f"{ws}?ticket={ticket}", f"{ws}?token={unknown}", f"ws://{host}/ws/events"):
            with contextlib.suppress(InvalidStatus):
                async with connect(url, additional_headers={"X-Probe": admin.token}):
                    pass
        async with connect(f"ws://{host}/ws/events", additional_headers=admin.headers):
            pass
    lines = log.read_text(errors="replace").splitlines()
    assert any("/ws/jobs/" in line for line in lines), "the run logged no socket at all"
    assert any("[redacted]" in line for line in lines)
    leaks = [(secret[:8], line) for line in lines for secret in secrets if secret in line]
    assert not leaks, leaks[:3]
    assert not [line for line in lines if line.startswith("ERROR")], "the run logged errors"
