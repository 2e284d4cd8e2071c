"""The one way EMP processes open an asyncio Redis client.

``socket_timeout=None`` on purpose: with a socket timeout set, redis-py 8.1 wraps every command's
send in ``asyncio.wait_for``, which on Python 3.11 can swallow a task's cancellation (seen here: a
cancelled task that kept looping, so a worker never stopped on SIGTERM) and costs about 20 µs of
CPU per command. Dead connections are found by TCP keepalive and the periodic health check instead;
blocking reads (XREAD BLOCK) carry their own timeout.
"""

from __future__ import annotations

import random
from typing import Any, cast

from redis import Redis as SyncRedis
from redis.asyncio import BlockingConnectionPool, Connection, Redis, SSLConnection
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.cluster import ClusterNode as SyncClusterNode
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.connection import HiredisRespSerializer
from redis.crc import REDIS_CLUSTER_HASH_SLOTS
from redis.exceptions import RedisClusterException
from redis.utils import HIREDIS_AVAILABLE


class _HiredisPackingConnection(Connection):
    """Packs commands with hiredis, as redis-py's synchronous client already does; the asyncio
    client packs in Python, about 10 µs per command here (measured by ``make bench``)."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._packer.pack(*args)
        return packed


class _WaitingPool(BlockingConnectionPool):
    """redis-py's waiting pool with a fast path for the common case, a free connection and nobody
    waiting: take it, or put it back, without the pool's condition, timeout scope and event hooks.

    ``BlockingConnectionPool`` spends about 25 µs of CPU per command there: an ``asyncio``
    condition, a timeout scope, the release event and connection-count hooks. Measured with
    ``PING`` here: 56 µs of CPU per command through it, 30 µs through this; a submit's round trip
    fell from ~210 to ~155 µs. Under asyncio nothing runs between the check and the pop, so the
    fast path hands out a connection no one else holds. Whenever a caller waits for a connection,
    a connection must reconnect, or the pool is in a maintenance window, the parent's own code
    runs, so waiting and its wake-up are exactly redis-py's. The hooks the fast path skips serve
    features EMP does not turn on (redis-py's metrics, re-authentication, maintenance
    notifications)."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Connection:
        if not self._available_connections or self._in_maintenance:
            return cast(Connection, await super().get_connection())  # type: ignore[no-untyped-call]
        connection = self._available_connections.pop()
        self._in_use_connections.add(connection)
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return cast(Connection, connection)

    async def release(self, connection: Any) -> None:
        waiting = self._condition._waiters
        if waiting or connection.should_reconnect() or self._in_maintenance:
            await super().release(connection)
            return
        self._in_use_connections.remove(connection)
        self._available_connections.append(connection)


class _EmpCluster(RedisCluster):
    """redis-py's cluster client, routing FCALL by its declared keys.

    redis-py 8.1 special-cases EVAL/EVALSHA but finds FCALL's keys with ``COMMAND GETKEYS``,
    sent to the node it first learned commands from: a round trip more per call, and after that
    node dies in a failover every FCALL fails with a connection error although the cluster has
    promoted a replica (seen in ``test_worker_failover.py``). FCALL names its keys as EVAL does
    (``FCALL name numkeys key...``), so they are read from the arguments."""

    async def _determine_slot(self, command: str, *args: Any) -> int:
        if command.upper() in ("FCALL", "FCALL_RO"):
            return _fcall_slot(self, (command, *args))
        return await super()._determine_slot(command, *args)


def _fcall_slot(client: RedisCluster | SyncRedisCluster, args: tuple[Any, ...]) -> int:
    """The slot of ``FCALL name numkeys key...`` from its declared keys (any slot for none)."""
    keys = args[3 : 3 + int(args[2])]
    if not keys:
        return random.randrange(REDIS_CLUSTER_HASH_SLOTS)
    slots = {client.keyslot(key) for key in keys}
    if len(slots) != 1:
        raise RedisClusterException(f"{args[0]} {args[1]} names keys of {len(slots)} slots")
    return slots.pop()


class _EmpSyncCluster(SyncRedisCluster):
    """The synchronous client with the same FCALL routing as ``_EmpCluster``."""

    def determine_slot(self, *args: Any) -> int | None:
        if str(args[0]).upper() in ("FCALL", "FCALL_RO"):
            return _fcall_slot(self, args)
        return super().determine_slot(*args)


CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
MAX_CONNECTIONS = 64
POOL_TIMEOUT_SECONDS = 20.0


def connect(
    url: str,
    *,
    max_connections: int = MAX_CONNECTIONS,
    pool_timeout: float = POOL_TIMEOUT_SECONDS,
    **overrides: Any,
) -> Redis:
    """An asyncio client for ``url`` with EMP's connection options (``overrides`` win).

    One node is reached over a pool of at most ``max_connections`` that *waits* up to
    ``pool_timeout`` s for a free connection when all are in use, instead of raising "Too many
    connections" as redis-py's default pool does (at 100): a burst of 200 sockets on one job is
    served in turn.

    ``redis://`` / ``rediss://`` (TLS) / ``unix://`` open one node;
    ``redis+cluster://HOST:PORT[,HOST:PORT...]`` (``rediss+cluster://`` with TLS) opens a Redis
    Cluster from its seed nodes, learning the rest (``CLUSTER SLOTS``) and following
    redirections and failovers by itself. Name two or three seeds in production.

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
        first, seeds = _cluster_seeds(scheme, rest)
        nodes = [ClusterNode(host, port) for host, port in seeds]
        cluster = _EmpCluster.from_url(first, startup_nodes=nodes, **options)
        return cast(Redis, cluster)
    if HIREDIS_AVAILABLE and url.startswith("redis://"):
        options["connection_class"] = _HiredisPackingConnection
    options.update(overrides)
    pool = _WaitingPool.from_url(
        url, max_connections=max_connections, timeout=pool_timeout, **options
    )
    return Redis.from_pool(pool)


def _cluster_seeds(scheme: str, rest: str) -> tuple[str, list[tuple[str, int]]]:
    """``redis+cluster://[auth@]h1:p1,h2:p2/...`` -> (``redis://[auth@]h1:p1/...``, the other
    seed nodes). Several seeds let a process start while any one node is down (the one a single
    seed names may be the primary that just failed)."""
    netloc, slash, tail = rest.partition("/")
    auth, at, hosts = netloc.rpartition("@")
    first, *others = hosts.split(",")
    seeds = []
    for other in others:
        host, _, port = other.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a Redis Cluster seed must read HOST:PORT, not {other!r}")
        seeds.append((host, int(port)))
    return f"{CLUSTER_SCHEMES[scheme]}://{auth}{at}{first}{slash}{tail}", seeds


def _cluster_connection(scheme: str) -> type[Connection]:
    if HIREDIS_AVAILABLE and scheme == "redis+cluster":
        return _HiredisPackingConnection
    return SSLConnection if scheme == "rediss+cluster" else Connection


def connect_sync(url: str, **overrides: Any) -> SyncRedis:
    """A synchronous client for ``url`` (either shape), for work that must not share the event
    loop: the worker's lease renewal runs in a thread so GPU work cannot starve it."""
    scheme, sep, rest = url.partition("://")
    if scheme in CLUSTER_SCHEMES and sep:
        first, seeds = _cluster_seeds(scheme, rest)
        nodes = [SyncClusterNode(host, port) for host, port in seeds]  # type: ignore[no-untyped-call]
        cluster = _EmpSyncCluster.from_url(first, startup_nodes=nodes, **overrides)
        return cast(SyncRedis, cluster)
    return SyncRedis.from_url(url, **overrides)
