"""A write acknowledged only once replicas hold it: ``FCALL`` then ``WAIT`` on one connection.

With asynchronous replication a primary answers before its replicas have the write; a failover in
that window loses an acknowledged submit (README, "Redis Cluster"). ``WAIT n timeout`` blocks until
``n`` replicas acknowledged every earlier write *of the same connection*, so the two commands go in
one pipeline: on one node it holds one connection, and on a cluster the pipeline sends both to the
node of the call's slot (``target_nodes``), again on one connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from emp_core.errors import EmpError
from emp_core.redis.cluster import is_cluster


class NotReplicated(EmpError):
    """The write is on the primary but fewer replicas than asked confirmed it in time: it may
    be lost in a failover. Retrying with the same Idempotency-Key is safe."""

    status_code = 503
    code = "not_replicated"


async def fcall_replicated(
    redis: Redis, replicas: int, timeout_ms: int, name: str, keys: Sequence[str], *args: Any
) -> Any:
    """``FCALL name`` and then ``WAIT replicas timeout_ms``; the call's reply, or
    ``NotReplicated`` when fewer replicas acknowledged it. Errors of the call raise as they would
    from ``fcall`` (``ResponseError``)."""
    pipe: Any = redis.pipeline(transaction=False)
    pipe.fcall(name, len(keys), *keys, *args)
    if is_cluster(redis):
        node = cast(RedisCluster, redis).get_node_from_key(keys[0])
        pipe.execute_command("WAIT", replicas, timeout_ms, target_nodes=node)
    else:
        pipe.execute_command("WAIT", replicas, timeout_ms)
    reply, acked = await pipe.execute()
    if int(acked) < replicas:
        raise NotReplicated(
            f"the write reached {int(acked)} of {replicas} replicas within {timeout_ms} ms and "
            "may be lost in a failover; retry with the same Idempotency-Key"
        )
    return reply
