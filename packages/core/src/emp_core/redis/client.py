"""The one way EMP processes open an asyncio Redis client.

``socket_timeout=None`` on purpose: with a socket timeout set, redis-py 8.1 wraps every command's
send in ``asyncio.wait_for``, which on Python 3.11 can swallow a task's cancellation (seen here: a
cancelled task that kept looping, so a worker never stopped on SIGTERM) and costs about 20 µs of
CPU per command. Dead connections are found by TCP keepalive and the periodic health check instead;
blocking reads (XREAD BLOCK) carry their own timeout.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Connection, Redis
from redis.connection import HiredisRespSerializer
from redis.utils import HIREDIS_AVAILABLE


class _HiredisPackingConnection(Connection):
    """Packs commands with hiredis, as redis-py's synchronous client already does; the asyncio
    client packs in Python, about 10 µs per command here (measured by ``make bench``)."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._packer.pack(*args)
        return packed


def connect(url: str, **overrides: Any) -> Redis:
    """An asyncio client for ``url`` with EMP's connection options (``overrides`` win)."""
    options: dict[str, Any] = {
        "socket_timeout": None,
        "socket_connect_timeout": 5.0,
        "socket_keepalive": True,
        "health_check_interval": 30,
    }
    if HIREDIS_AVAILABLE and url.startswith("redis://"):
        options["connection_class"] = _HiredisPackingConnection
    options.update(overrides)
    return Redis.from_url(url, **options)
