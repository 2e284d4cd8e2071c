"""Single-use WebSocket tickets: how a browser opens an API socket without putting its long-lived
token in a URL (which proxies log and browsers keep in history).

The client asks ``POST /api/ws-tickets`` with its token in the ``Authorization`` header and gets a
random ticket that is good for one socket, within ``ttl`` seconds: ``/ws/jobs/{id}?ticket=…``.
Redis holds only the ticket's sha256 -> the token's sha256; redeeming it is a ``GETDEL``, so a
ticket replayed from a log opens nothing. The socket then runs as the token, revocation included.
"""

from __future__ import annotations

import hashlib
import secrets

from redis.asyncio import Redis

from emp_core.queue.keys import Keys
from emp_core.redis import text

TICKET_PREFIX = "wst_"
TICKET_SECONDS = 30


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


async def issue(redis: Redis, keys: Keys, token_digest: str, *, ttl: int = TICKET_SECONDS) -> str:
    ticket = TICKET_PREFIX + secrets.token_urlsafe(32)
    await redis.set(keys.ws_ticket(_digest(ticket)), token_digest, ex=ttl)
    return ticket


async def redeem(redis: Redis, keys: Keys, ticket: str) -> str | None:
    """The token digest the ticket stands for, once; None when unknown, used or expired."""
    if not ticket.startswith(TICKET_PREFIX) or len(ticket) > 100:
        return None
    value = await redis.getdel(keys.ws_ticket(_digest(ticket)))
    if value is None:
        return None
    return text(value)
