"""200 sockets opened at once on one job in one studio process, with a Redis pool far smaller
than that: every socket is served, and every one follows the job to its end and closes with 1000
(issue 12, defect 1; the studio dropped 101 of them with 1006). A studio socket sends page parts,
not events: a part rendered after several events shows them all, so what is asserted is that
every socket reaches the end."""

from __future__ import annotations

import asyncio
import os

from studio_helpers import Studio, Visitor, job_form, running_studio
from websockets.asyncio.client import ClientConnection, connect

from emp_core.queue.queue import Queue
from emp_core.settings import QueueSettings
from emp_web.testing import create_account, crowd, small_pool

SOCKETS = int(os.environ.get("EMP_TEST_SOCKETS", "200"))


async def _follow(studio: Studio, cookie: str, job_id: str, opened: asyncio.Event) -> list[str]:
    async with connect(  # type: ignore[arg-type]
        f"{studio.ws}/ws/jobs/{job_id}", additional_headers={"Cookie": cookie},
        origin=studio.base, open_timeout=60,
    ) as ws:  # fmt: skip
        frames = [str(await asyncio.wait_for(ws.recv(), 60))]
        opened.set()
        frames += [str(frame) async for frame in _rest(ws)]
        assert ws.close_code == 1000, (ws.close_code, ws.close_reason)
        return frames


async def _rest(ws: ClientConnection):  # type: ignore[no-untyped-def]
    async for frame in ws:
        yield frame


async def test_200_sockets_on_one_job_all_get_every_event(
    settings: QueueSettings, database_url: str, queue: Queue
) -> None:
    account = await create_account(database_url, name="crowd")
    async with running_studio(small_pool(settings), database_url) as studio:
        visitor: Visitor = studio.visitor()
        await visitor.sign_in(account)
        await visitor.get("/jobs/new")
        job_id = (await visitor.post("/jobs", job_form())).headers["location"].split("/")[-1]
        cookie = visitor.cookie_header
        results = await crowd(
            lambda opened: _follow(studio, cookie, job_id, opened), queue, SOCKETS
        )
        assert len(results) == SOCKETS
        for frames in results:
            assert "pending" in frames[0] or "claimed" in frames[0]
            assert 'data-testid="job-status">completed' in frames[-1]
        await visitor.aclose()
