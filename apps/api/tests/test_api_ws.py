"""WebSockets: replay then live with a late subscriber, no gap and no duplicate under a stream of
progress, the admin feed's filter, and the hub's backlog rules."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from api_helpers import Api, job_body
from websockets.asyncio.client import ClientConnection, connect

from emp_core.jobs.events import replay
from emp_core.queue.queue import Queue
from emp_web.hub import EventHub, Subscription
from emp_web.testing import Account, claim


async def _until_closed(socket: ClientConnection) -> list[dict[str, Any]]:
    events = []
    async for message in socket:
        events.append(orjson.loads(message))
    return events


async def test_late_subscriber_gets_replay_then_live(
    api: Api, accounts: dict[str, Account], queue: Queue
) -> None:
    alice = accounts["alice"]
    job = (await api.http.post("/api/jobs", json=job_body(), headers=alice.headers)).json()
    claimed = await claim(queue)
    await queue.progress(claimed, 25, "step 1")
    await queue.progress(claimed, 50, "step 2")

    async with connect(f"{api.ws}/ws/jobs/{job['id']}", additional_headers=alice.headers) as ws:
        replayed = [orjson.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(4)]
        assert [e["type"] for e in replayed] == ["submitted", "claimed", "progress", "progress"]
        await queue.progress(claimed, 75, "step 3")
        live = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert (live["type"], live["progress"], live["message"]) == ("progress", 75, "step 3")
        await queue.complete(claimed, {"images": 1})
        rest = await asyncio.wait_for(_until_closed(ws), 5)
        assert [e["type"] for e in rest] == ["completed"]
        assert ws.close_code == 1000

    # Connecting after the end replays everything and closes at once.
    async with connect(f"{api.ws}/ws/jobs/{job['id']}", additional_headers=alice.headers) as ws:
        again = await asyncio.wait_for(_until_closed(ws), 5)
    assert [e["type"] for e in again][-1] == "completed"
    assert len(again) == 6


async def test_no_gap_and_no_duplicate_while_events_stream(
    api: Api, accounts: dict[str, Account], queue: Queue
) -> None:
    """Subscribers connect while a worker reports as fast as it can; each must receive exactly
    the job's stream, in order, however its replay and the live feed overlapped."""
    alice = accounts["alice"]
    job = (await api.http.post("/api/jobs", json=job_body(), headers=alice.headers)).json()
    claimed = await claim(queue)

    async def work() -> None:
        for step in range(300):
            await queue.progress(claimed, step / 3)
            if step % 50 == 0:
                await asyncio.sleep(0.005)
        await queue.complete(claimed, None)

    async def subscriber(delay: float) -> list[str]:
        await asyncio.sleep(delay)
        url = f"{api.ws}/ws/jobs/{job['id']}"
        async with connect(url, additional_headers=alice.headers) as ws:
            return [e["event_id"] for e in await _until_closed(ws)]

    worker = asyncio.create_task(work())
    received = await asyncio.wait_for(
        asyncio.gather(*(subscriber(d) for d in (0, 0.01, 0.02, 0.04, 0.08))), 20
    )
    await worker
    stream = [e.event_id for e in await replay(queue.redis, queue.keys, job["id"])]
    for ids in received:
        assert ids == stream


async def test_admin_feed_filters(api: Api, accounts: dict[str, Account], queue: Queue) -> None:
    alice, admin = accounts["alice"], accounts["admin"]
    async with connect(f"{api.ws}/ws/events", additional_headers=admin.headers) as ws:
        await ws.send(orjson.dumps({"type": "subscribe", "services": ["render"]}).decode())
        ack = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert ack == {"type": "subscribed", "services": ["render"], "statuses": None}
        await api.http.post("/api/jobs", json=job_body(), headers=alice.headers)
        wanted = await api.http.post(
            "/api/jobs", json=job_body(service="render"), headers=alice.headers
        )
        event = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert (event["job_id"], event["service"]) == (wanted.json()["id"], "render")

        await ws.send(orjson.dumps({"type": "subscribe", "statuses": ["cancelled"]}).decode())
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "subscribed"
        await api.http.post("/api/jobs", json=job_body(), headers=alice.headers)
        await api.http.post(f"/api/jobs/{wanted.json()['id']}/cancel", headers=alice.headers)
        event = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert (event["type"], event["job_id"]) == ("cancelled", wanted.json()["id"])

        await ws.send('{"type": "subscribe", "statuses": ["sleeping"]}')
        error = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert error["type"] == "error"
        assert error["error"]["field"] == "statuses.0"


def _event(job_id: str, n: int, kind: str = "progress") -> bytes:
    status = {"progress": "running", "completed": "completed", "claimed": "claimed"}[kind]
    return orjson.dumps({"event_id": f"{n}-0", "job_id": job_id, "type": kind, "status": status,
                         "at": n, "service": "simulation", "progress": n % 100})  # fmt: skip


def test_backlog_drops_oldest_progress_never_terminal() -> None:
    hub = EventHub(redis=None, channel="unused", backlog=8)  # type: ignore[arg-type]
    slow, fast = hub.follow_job("j1"), hub.follow_job("j1")
    hub.dispatch(_event("j1", 1, "claimed"))
    for n in range(2, 40):
        hub.dispatch(_event("j1", n))
        fast._backlog.clear()  # a socket that keeps up
    hub.dispatch(_event("j1", 40, "completed"))
    kept = [orjson.loads(item.text) for item in slow._backlog]
    assert len(kept) == 8
    assert kept[0]["type"] == "claimed"
    assert kept[-1]["type"] == "completed"
    assert [e["progress"] for e in kept[1:-1]] == [34, 35, 36, 37, 38, 39]
    assert slow.dropped == 32
    assert [orjson.loads(i.text)["type"] for i in fast._backlog] == ["completed"]


def test_a_socket_too_slow_for_terminal_events_is_cut_off() -> None:
    hub = EventHub(redis=None, channel="unused", backlog=8)  # type: ignore[arg-type]
    firehose = hub.follow_all()
    for n in range(8 * 4):
        hub.dispatch(_event(f"job{n}", n, "completed"))
    assert not firehose.overflowed
    hub.dispatch(_event("one-more", 99, "completed"))
    assert firehose.overflowed


async def test_subscription_wakes_its_reader() -> None:
    sub = Subscription(limit=4)
    reader = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    hub = EventHub(redis=None, channel="unused")  # type: ignore[arg-type]
    hub._firehose.add(sub)
    hub.dispatch(_event("j", 1))
    item = await asyncio.wait_for(reader, 1)
    assert item is not None
    assert item.job_id == "j"


async def test_events_missed_while_the_feed_reconnects_are_replayed(
    api: Api, accounts: dict[str, Account], queue: Queue
) -> None:
    alice = accounts["alice"]
    job = (await api.http.post("/api/jobs", json=job_body(), headers=alice.headers)).json()
    claimed = await claim(queue)
    async with connect(f"{api.ws}/ws/jobs/{job['id']}", additional_headers=alice.headers) as ws:
        for _ in range(2):  # submitted, claimed
            await asyncio.wait_for(ws.recv(), 5)
        # Cut the hub's subscription: what is published until it is back never reaches it.
        await queue.redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        for step in range(20):
            await queue.progress(claimed, step)
        await queue.complete(claimed, None)
        rest = await asyncio.wait_for(_until_closed(ws), 15)
    stream = [e.event_id for e in await replay(queue.redis, queue.keys, job["id"])]
    assert [e["event_id"] for e in rest] == stream[2:]
    assert rest[-1]["type"] == "completed"


def test_events_nobody_watches_are_not_decoded() -> None:
    hub = EventHub(redis=None, channel="unused", backlog=8)  # type: ignore[arg-type]
    hub.dispatch(_event("nobody-follows", 1, "claimed"))
    assert (hub.unwatched, hub.delivered) == (1, 0)
    hub.follow_job("j1")
    hub.dispatch(_event("j1", 2, "claimed"))
    hub.dispatch(_event("still-nobody", 3, "claimed"))
    assert (hub.unwatched, hub.delivered) == (2, 1)
