"""The one way EMP processes open an asyncio Redis client.

``socket_timeout=None`` on purpose: with a socket timeout set, redis-py 8.1 wraps every command's
send in ``asyncio.wait_for``, which on Python 3.11 can swallow a task's cancellation (seen here: a
cancelled task that kept looping, so a worker never stopped on SIGTERM) and costs about 20 µs of
CPU per command. Dead connections are found by TCP keepalive and the periodic health check instead;
blocking reads (XREAD BLOCK) carry their own timeout.
"""

from __future__ import annotations

from typing import Any, cast

from redis import Redis as SyncRedis
from redis.asyncio import Connection, Redis, SSLConnection
from redis.asyncio.cluster import RedisCluster
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.connection import HiredisRespSerializer
from redis.utils import HIREDIS_AVAILABLE


class _HiredisPackingConnection(Connection):
    """Packs commands with hiredis, as redis-py's synchronous client already does; the asyncio
    client packs in Python, about 10 µs per command here (measured by ``make bench``)."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._packer.pack(*args)
        return packed


CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def connect(url: str, **overrides: Any) -> Redis:
    """An asyncio client for ``url`` with EMP's connection options (``overrides`` win).

    ``redis://`` / ``rediss://`` (TLS) / ``unix://`` open one node; ``redis+cluster://HOST:PORT``
    (``rediss+cluster://`` with TLS) opens a Redis Cluster from any one of its nodes, learning
    the rest from it (``CLUSTER SLOTS``) and following redirections and failovers by itself.

    The cluster client is typed as ``Redis``: ``RedisCluster`` offers every command EMP sends
    with the same signature (the core suite runs unchanged on both shapes, see
    ``packages/core/tests``), and what differs lives in ``emp_core.redis.cluster``."""
    options: dict[str, Any] = {
        "socket_timeout": None,
        "socket_connect_timeout": 5.0,
        "socket_keepalive": True,
        "health_check_interval": 30,
    }
    scheme, sep, rest = url.partition("://")
    if scheme in CLUSTER_SCHEMES and sep:
        options.pop("health_check_interval")  # per node, and the cluster client refreshes itself
        options.update(overrides)
        options.setdefault("connection_class", _cluster_connection(scheme))
        cluster = RedisCluster.from_url(f"{CLUSTER_SCHEMES[scheme]}://{rest}", **options)
        return cast(Redis, cluster)
    if HIREDIS_AVAILABLE and url.startswith("redis://"):
        options["connection_class"] = _HiredisPackingConnection
    options.update(overrides)
    return Redis.from_url(url, **options)


def _cluster_connection(scheme: str) -> type[Connection]:
    if HIREDIS_AVAILABLE and scheme == "redis+cluster":
        return _HiredisPackingConnection
    return SSLConnection if scheme == "rediss+cluster" else Connection


def connect_sync(url: str, **overrides: Any) -> SyncRedis:
    """A synchronous client for ``url`` (either shape), for work that must not share the event
    loop: the worker's lease renewal runs in a thread so GPU work cannot starve it."""
    scheme, sep, rest = url.partition("://")
    if scheme in CLUSTER_SCHEMES and sep:
        cluster = SyncRedisCluster.from_url(f"{CLUSTER_SCHEMES[scheme]}://{rest}", **overrides)
        return cast(SyncRedis, cluster)
    return SyncRedis.from_url(url, **overrides)
