"""The live pages over WebSocket: a job's parts as HTML fragments until it ends, and the
dashboard re-rendered as workers and jobs change."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from studio_helpers import Studio, Visitor, job_form
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.queue import Queue
from emp_core.registry.machines import MachineRegistry, MachineState, MachineStatus
from emp_core.registry.workers import WorkerRegistry
from emp_web.testing import claim


async def _submit(visitor: Visitor) -> str:
    await visitor.get("/jobs/new")
    response = await visitor.post("/jobs", job_form())
    return str(response.headers["location"]).removeprefix("/jobs/")


def _socket(studio: Studio, visitor: Visitor, path: str) -> connect:
    headers = {"Cookie": visitor.cookie_header}
    return connect(f"{studio.ws}{path}", additional_headers=headers, origin=studio.base)  # type: ignore[arg-type]


async def _recv(ws: ClientConnection) -> str:
    return str(await asyncio.wait_for(ws.recv(), 5))


async def test_a_job_page_follows_the_job_until_it_ends(
    studio: Studio, alice: Visitor, queue: Queue
) -> None:
    job_id = await _submit(alice)
    async with _socket(studio, alice, f"/ws/jobs/{job_id}") as ws:
        first = await _recv(ws)
        for part in ("job-progress", "job-actions", "job-facts", "job-timeline", "job-outcome"):
            assert f'id="{part}"' in first
        assert "pending" in first
        claimed = await claim(queue)
        started = await _recv(ws)  # the claim: every part again
        assert 'data-testid="job-status">claimed' in started
        await queue.progress(claimed, 50, "step 5 of 10")
        progress = await _recv(ws)  # progress: only the progress part
        assert progress.lstrip().startswith('<div id="job-progress"')
        assert 'value="50.0"' in progress
        assert "step 5 of 10" in progress
        await queue.complete(claimed, {"image": "data:image/png;base64,iVBORw0KGgo="})
        final = await _recv(ws)
        assert 'data-testid="result-image"' in final
        assert 'data-testid="cancel-job"' not in final
        with pytest.raises(Exception):  # noqa: B017, PT011 - the close ends recv
            await _recv(ws)
    assert ws.close_code == 1000


async def test_a_finished_jobs_socket_sends_once_and_closes(
    studio: Studio, alice: Visitor, queue: Queue
) -> None:
    job_id = await _submit(alice)
    await queue.cancel(job_id)
    async with _socket(studio, alice, f"/ws/jobs/{job_id}") as ws:
        assert 'data-testid="job-cancelled"' in await _recv(ws)
        await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 1000


async def test_another_users_job_socket_is_refused(
    studio: Studio, alice: Visitor, bob: Visitor
) -> None:
    job_id = await _submit(alice)
    with pytest.raises(InvalidStatus):
        async with _socket(studio, bob, f"/ws/jobs/{job_id}"):
            pass


async def test_the_dashboard_shows_workers_as_they_come(
    studio: Studio, admin: Visitor, alice: Visitor, queue: Queue, redis
) -> None:
    registry = WorkerRegistry(redis, queue.keys)
    async with _socket(studio, admin, "/ws/dashboard") as ws:
        first = await _recv(ws)
        assert 'id="dashboard-live"' in first
        assert 'data-testid="workers-empty"' in first
        caps = WorkerCapabilities(
            worker_id="gpu-box-0",
            services=["simulation"],
            hardware={"gpu_memory_gb": 24},
            capabilities={"gpu": {"vendor": "nvidia"}},
        )
        await registry.register(caps)
        update = await _recv(ws)
        assert "gpu-box-0" in update
        assert "24 GB GPU" in update
        assert "gpu.vendor = nvidia" in update


async def test_the_dashboard_page(admin: Visitor, alice: Visitor, queue: Queue, redis) -> None:
    await _submit(alice)
    job_id = await _submit(alice)
    caps = WorkerCapabilities(worker_id="busy-one", services=["simulation"])
    await WorkerRegistry(redis, queue.keys).register(caps)
    claimed = await claim(queue)
    await redis.hset(queue.keys.worker("busy-one"), mapping={"state": "busy", "job_id": job_id})
    now = datetime.now(UTC)
    status = MachineStatus(
        machine_id="m-1", hostname="salad-7", gpus=2, state=MachineState.RUNNING,
        started_at=now, last_seen=now,
    )  # fmt: skip
    await MachineRegistry(redis, queue.keys).report(status)

    as_admin = (await admin.get("/")).text
    assert 'data-testid="stat-pending">1<' in as_admin
    assert f'href="/jobs/{job_id}"' in as_admin
    assert 'data-testid="machine"' in as_admin
    assert "salad-7" in as_admin
    as_user = (await alice.get("/")).text
    assert "busy-one" in as_user
    assert f'href="/jobs/{job_id}"' not in as_user  # which job a worker runs is for admins
    assert 'data-testid="machine"' not in as_user
    await queue.complete(claimed, None)
