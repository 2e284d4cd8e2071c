"""What every live page's WebSocket shares: who may connect, and serving until either side ends.

A socket is authenticated by the session cookie, like a page; it is refused (closed before it is
accepted, which the browser sees as a failed handshake) when no one is signed in or when the
handshake comes from another site's page. Browsers send cookies with a cross-site WebSocket
handshake unless SameSite forbids it, so the ``Origin`` check is what stops another site from
reading a signed-in user's live pages (cross-site WebSocket hijacking).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from fastapi import WebSocket

from emp_sql.auth import Principal
from emp_studio.session import signed_in
from emp_studio.state import Services
from emp_web.sockets import CLOSE_POLICY

logger = logging.getLogger(__name__)


def same_origin(websocket: WebSocket) -> bool:
    """Whether the handshake came from one of our pages (or from no page: a non-browser
    client, which no other site can drive with the user's cookie)."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == websocket.headers.get("host")


async def admit(websocket: WebSocket, services: Services) -> Principal | None:
    """The signed-in viewer, or None after refusing the socket."""
    if not same_origin(websocket):
        await refuse(websocket, "cross-origin socket refused")
        return None
    viewer = await signed_in(websocket.session, services)
    if viewer is None:
        await refuse(websocket, "sign in first")
    return viewer


async def refuse(websocket: WebSocket, reason: str) -> None:
    """Refuse a socket before accepting it (the browser sees a failed handshake). Logged at INFO:
    anyone can knock, and the error log is for the server's own faults."""
    logger.info("refused a socket on %s: %s", websocket.url.path, reason)
    await websocket.close(CLOSE_POLICY, reason[:120])
