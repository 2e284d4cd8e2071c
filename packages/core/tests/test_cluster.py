"""What differs on a Redis Cluster: the library on every primary (and back on a node that lost
it), FCALL routed by its declared keys, and a queue's keys in one slot."""

from __future__ import annotations

import redis as sync_redis
from redis.crc import key_slot

from emp_core.queue import Queue
from emp_core.queue.functions import LIBRARY_VERSION, Functions
from emp_core.queue.keys import Keys
from emp_core.redis import connect
from emp_core.redis.cluster import is_cluster, primaries
from emp_core.settings import QueueSettings


def _node(port: int) -> sync_redis.Redis:
    return sync_redis.Redis(port=port)


async def test_the_library_is_on_every_primary_and_returns_to_a_node_that_lost_it(
    redis_cluster_url: str,
):
    client = connect(redis_cluster_url)
    try:
        assert is_cluster(client)
        functions = Functions(client, Keys("emp", "lib"))
        await functions.load()
        nodes = primaries(client)
        assert len(nodes) == 3
        for node in nodes:
            assert int(_node(node.port).fcall("emp_version", 0)) == LIBRARY_VERSION
        # A primary without the library (a node that joined, a replica of an empty node): the
        # next call that lands there installs it everywhere it is missing and goes through.
        owner = client.get_node_from_key(functions.keys.pending_count())  # type: ignore[attr-defined]
        _node(owner.port).function_flush()
        settings = QueueSettings(redis_url=redis_cluster_url, queue="lib")
        job_id = await Queue(client, settings).submit({"service": "simulation"})
        assert job_id
        assert int(_node(owner.port).fcall("emp_version", 0)) == LIBRARY_VERSION
    finally:
        await client.aclose()


async def test_fcall_is_routed_by_its_keys_without_asking_the_server(redis_cluster_url: str):
    client = connect(redis_cluster_url)
    try:
        functions = Functions(client, Keys("emp", "route"))
        await functions.load()
        ports = [node.port for node in primaries(client)]
        for port in ports:
            _node(port).config_resetstat()
        queue = Queue(client, QueueSettings(redis_url=redis_cluster_url, queue="route"))
        for _ in range(20):
            await queue.submit({"service": "simulation"})
        getkeys = sum(
            int(_node(port).info("commandstats").get("cmdstat_command|getkeys", {}).get("calls", 0))
            for port in ports
        )
        assert getkeys == 0  # redis-py alone would ask COMMAND GETKEYS once per FCALL
    finally:
        await client.aclose()


def test_every_key_of_a_queue_is_in_one_slot():
    keys = Keys("emp", "q1")
    names = [
        keys.job("j"), keys.events("j"), keys.seq(), keys.classes("s"), keys.pending("c"),
        keys.pending_count(), keys.workflow("w"), keys.delayed(), keys.leases(), keys.dead(),
        keys.customer_jobs("c"), keys.worker("w"), keys.workers(), keys.machine("m"),
        keys.machines(), keys.idempotency("o", "d"), keys.finished(), keys.archive_leader(),
        keys.patterns_snapshot(), keys.pattern_matches("d"),
    ]  # fmt: skip
    # Each queue's slot is its name's: the set of queues spreads over the cluster.
    assert {key_slot(name.encode()) for name in names} == {key_slot(b"q1")}
