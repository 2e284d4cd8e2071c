"""What every WebSocket route of the API and the studio shares: close codes, serving a socket
until either side ends, ordering events by their stream id, and what an error does to a socket.

An error while serving a socket ends it with a close frame (1013 when Redis or SQL did not
answer, 1011 otherwise), never with an HTTP response: once a socket is accepted there is no HTTP
left to answer with (Starlette's exception handlers would try). ``guarded`` wraps every socket
route for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from emp_core.errors import EmpError
from emp_sql.auth import Principal
from emp_web.hub import CLOSE_POLICY, CLOSE_TRY_AGAIN, Subscription

if TYPE_CHECKING:
    from emp_web.services import WebServices

logger = logging.getLogger(__name__)

# RFC 6455 close codes the apps use (and CLOSE_POLICY, CLOSE_TRY_AGAIN from the hub).
CLOSE_NORMAL = 1000
CLOSE_ERROR = 1011  # the server failed
__all__ = ["CLOSE_ERROR", "CLOSE_NORMAL", "CLOSE_POLICY", "CLOSE_TRY_AGAIN"]

_BACKEND_DOWN = (RedisConnectionError, RedisTimeoutError, OperationalError, InterfaceError,
                 PoolTimeout)  # fmt: skip

E = TypeVar("E", bound=Callable[..., Awaitable[None]])


async def close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    """Close unless the socket is closed already (before accepting: a refused handshake)."""
    if websocket.application_state == WebSocketState.DISCONNECTED:
        return
    if websocket.client_state == WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
        await websocket.close(code, reason[:120])


def guarded(endpoint: E) -> E:
    """A socket route that ends in a close frame whatever fails inside it."""

    @functools.wraps(endpoint)
    async def run(websocket: WebSocket, *args: Any, **kwargs: Any) -> None:
        try:
            await endpoint(websocket, *args, **kwargs)
        except WebSocketDisconnect:
            pass
        except _BACKEND_DOWN as exc:
            logger.warning("a socket on %s ended: a backend is not answering (%s)",
                           websocket.url.path, str(exc).splitlines()[0][:200] if str(exc) else
                           type(exc).__name__)  # fmt: skip
            await close_quietly(websocket, CLOSE_TRY_AGAIN, "the server is busy; try again")
        except Exception:
            logger.exception("a socket on %s failed", websocket.url.path)
            await close_quietly(websocket, CLOSE_ERROR, "internal error")

    return run  # type: ignore[return-value]


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
    services: WebServices[Any, Any],
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
    sub = services.hub.follow_job(job_id, viewer)
    try:
        await websocket.accept()
        await serve_feed(websocket, feed(viewer, sub))
    finally:
        services.hub.leave(sub)
