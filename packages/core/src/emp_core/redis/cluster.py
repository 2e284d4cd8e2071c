"""Redis Cluster: what differs from a single node, in one place.

Everything else is the same code on both shapes: every key of a queue carries the queue's hash
tag (``emp:{queue}:…``), so a queue lives in one slot, every Lua call touches one node, and a
transaction (MULTI/WATCH) never crosses slots. What cannot follow a key is here:

- The Function library is per node (``FUNCTION LOAD`` is not replicated across primaries), so it
  is loaded and version-checked on every primary, and again on a node that answers
  "function not found" (one that joined, or a replica promoted from an empty node).
- Calls with no key (``emp_version``) go to a node of our choice.

Pub/sub is sharded (``SPUBLISH``/``SSUBSCRIBE``), so it needs nothing here: every channel carries
its queue's hash tag and lives on the queue's shard, where classic ``PUBLISH`` would be copied over
the cluster bus to every node. ``emp_core.redis.subscription`` listens on both shapes, and after a
failover refreshes the slot map so redis-py's ``ClusterPubSub`` moves its channels to the new
primary.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

T = TypeVar("T")


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


def primaries(client: Redis | RedisCluster) -> list[ClusterNode]:
    """The cluster's primaries as the client last saw them ([] for a single node)."""
    if isinstance(client, RedisCluster):
        return list(client.get_primaries())
    return []


async def on_each_primary(
    client: Redis | RedisCluster, call: Callable[[Callable[..., Awaitable[Any]]], Awaitable[T]]
) -> list[T]:
    """Run ``call(execute)`` once per primary, where ``execute(*command)`` sends to that node;
    on a single node, once against it."""
    if not isinstance(client, RedisCluster):
        return [await call(client.execute_command)]
    await client.initialize()  # a fresh view of the topology: a node may have joined
    results = []
    for node in client.get_primaries():

        async def execute(*command: Any, _node: ClusterNode = node) -> Any:
            return await client.execute_command(*command, target_nodes=_node)

        results.append(await call(execute))
    return results
