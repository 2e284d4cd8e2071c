"""What every WebSocket route of the API and the studio shares: close codes, serving a socket
until either side ends, and ordering events by their stream id."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket, WebSocketDisconnect

from emp_core.errors import EmpError
from emp_sql.auth import Principal
from emp_web.hub import Subscription

if TYPE_CHECKING:
    from emp_web.services import WebServices

# RFC 6455 close codes the apps use.
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008  # refused: not signed in, no token, cross-origin, not allowed
CLOSE_TRY_AGAIN = 1013  # the socket could not keep up and events were left behind


def stream_id(event_id: str) -> tuple[int, int]:
    """A Redis stream id (``"1700000000000-3"``) as a sortable pair; ``(0, 0)`` for none."""
    ms, _, seq = event_id.partition("-")
    return (int(ms), int(seq or 0)) if ms.isdigit() else (0, 0)


async def until_closed(websocket: WebSocket) -> None:
    """Read and drop what the client sends until it disconnects."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def serve(sender: Awaitable[None], receiver: Awaitable[None]) -> None:
    """Run a socket's sender and receiver until either ends (the feed ended, or the client went
    away), then stop the other. A send to a client that has gone is not an error here: it
    raises ``WebSocketDisconnect``, an ``OSError`` (uvicorn) or a ``RuntimeError`` (Starlette,
    after a close)."""
    tasks = {asyncio.ensure_future(sender), asyncio.ensure_future(receiver)}
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        exc = task.exception()
        if exc is not None and not isinstance(exc, WebSocketDisconnect | OSError | RuntimeError):
            raise exc


async def serve_feed(websocket: WebSocket, feed: Awaitable[None]) -> None:
    """Run ``feed`` until it ends or the client goes away (whatever the client sends is dropped)."""
    await serve(feed, until_closed(websocket))


async def serve_job_socket(
    websocket: WebSocket,
    services: WebServices,
    job_id: str,
    *,
    admit: Callable[[], Awaitable[Principal | None]],
    refuse: Callable[[EmpError], Awaitable[None]],
    feed: Callable[[Principal, Subscription], Awaitable[None]],
) -> None:
    """Serve one job's socket: ``admit`` names the viewer (or refuses the socket and returns
    None); refuse it (before accepting) unless the viewer may see the job, else subscribe to the
    hub *before* accepting and reading anything, so that what happens in between is both read
    and delivered (the stream ids drop the second copy), and run ``feed(viewer, subscription)``
    until it or the client ends."""
    viewer = await admit()
    if viewer is None:
        return
    try:
        await services.catalog.get(job_id, viewer)
    except EmpError as exc:
        await refuse(exc)
        return
    sub = services.hub.follow_job(job_id)
    try:
        await websocket.accept()
        await serve_feed(websocket, feed(viewer, sub))
    finally:
        services.hub.leave(sub)
