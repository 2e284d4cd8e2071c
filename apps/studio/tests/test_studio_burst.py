"""200 sockets opened at once on one job in one studio process, with a Redis pool far smaller
than that: every socket is served, and every one follows the job to its end and closes with 1000
(issue 12, defect 1; the studio dropped 101 of them with 1006). A studio socket sends page parts,
not events: a part rendered after several events shows them all, so what is asserted is that
every socket reaches the end."""

from __future__ import annotations

import asyncio
import os

from studio_helpers import Studio, Visitor, claim, create_account, job_form, running_studio
from websockets.asyncio.client import ClientConnection, connect

from emp_core.queue.queue import Queue
from emp_core.settings import QueueSettings

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
    small_pool = settings.model_copy(update={"redis_max_connections": 8})
    async with running_studio(small_pool, database_url) as studio:
        visitor: Visitor = studio.visitor()
        await visitor.sign_in(account)
        await visitor.get("/jobs/new")
        job_id = (await visitor.post("/jobs", job_form())).headers["location"].split("/")[-1]
        events = [asyncio.Event() for _ in range(SOCKETS)]
        tasks = [
            asyncio.create_task(_follow(studio, visitor.cookie_header, job_id, events[i]))
            for i in range(SOCKETS)
        ]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 120)
        claimed = await claim(queue)
        await queue.progress(claimed, 40, "step 4 of 10")
        await queue.complete(claimed, {"text": "done"})
        results = await asyncio.wait_for(asyncio.gather(*tasks), 120)
        assert len(results) == SOCKETS
        for frames in results:
            assert "pending" in frames[0] or "claimed" in frames[0]
            assert 'data-testid="job-status">completed' in frames[-1]
        await visitor.aclose()
