"""Failover: a Redis Cluster of three primaries and three replicas loses the primary that holds
the queue while workers run jobs and a client keeps submitting.

The cluster promotes that primary's replica; the workers and the submitter reconnect by
themselves (redirections and topology refresh in redis-py's cluster client) and the queue
carries on. Replication is asynchronous, so a write acknowledged just before the kill may never
have reached the replica: such a job is *lost*, and the test counts those rather than forbidding
them. What must never happen is a job completed twice, or a job reported completed that the
queue has since lost. The figures it prints go into the README's failover section.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from pathlib import Path

import pytest
from redis.exceptions import RedisClusterException, RedisError
from worker_helpers import worker_command, worker_env

from emp_core.queue.queue import Queue
from emp_core.redis import connect, text
from emp_core.redis.replicated import NotReplicated
from emp_core.redis.server import LocalCluster
from emp_core.settings import QueueSettings

WORKERS = 3
SUBMITS = 300
PAYLOAD = {"steps": 2, "step_time": 0.02}

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path):
    with LocalCluster(tmp_path / "cluster", primaries=3, replicas=1) as c:
        yield c


async def _owner(cluster: LocalCluster, queue: Queue) -> int:
    """Index of the node that is primary for the queue's slot."""
    node = queue.redis.get_node_from_key(queue.keys.pending_count())  # type: ignore[attr-defined]
    return next(i for i, n in enumerate(cluster.nodes) if n.port == int(node.port))


@pytest.mark.parametrize("wait_replicas", [0, 1], ids=["async-replication", "wait-1-replica"])
async def test_a_primary_killed_under_load_loses_at_most_unreplicated_submits(
    cluster: LocalCluster, tmp_path: Path, capsys, wait_replicas: int
):
    """With ``EMP_REDIS_WAIT_REPLICAS=1`` a submit is acknowledged only once the replica holds
    it (``WAIT``), so the replica promoted after the kill has every acknowledged job: none may
    be lost. Without it, the few acknowledged in the last milliseconds may be.

    With WAIT, a submit no replica confirmed within the timeout answers 503 ``NotReplicated``
    (written, not confirmed: the client retries with its Idempotency-Key); the killed node is
    restarted 3 s after the kill, as an operator would, and rejoins as a replica."""
    settings = QueueSettings(
        redis_url=cluster.url, queue="failover", redis_wait_replicas=wait_replicas
    )
    redis = connect(cluster.url)
    queue = Queue(redis, settings)
    await queue.functions.load()
    env = worker_env(settings, EMP_LEASE_SECONDS="2", EMP_REAP_INTERVAL_SECONDS="0.5")
    procs = []
    for i in range(WORKERS):
        with (tmp_path / f"w{i}.log").open("wb") as out:
            procs.append(
                subprocess.Popen(  # noqa: ASYNC220 - starting a process does not block for long
                    worker_command("--worker-id", f"fo-{i}", "--slots", "2"),
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    acknowledged: list[str] = []
    refused = 0
    errors: dict[str, int] = {}
    killed_at = recovered_at = 0.0
    restarted = False
    victim = await _owner(cluster, queue)
    async with asyncio.timeout(60):  # the workers are up before the load starts
        while len(await redis.zrange(queue.keys.workers(), 0, -1)) < WORKERS:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    try:
        give_up = time.monotonic() + 90
        while len(acknowledged) < SUBMITS and time.monotonic() < give_up:
            if not killed_at and len(acknowledged) == SUBMITS // 3:
                cluster.nodes[victim].kill()  # SIGKILL: no chance to hand anything over
                killed_at = time.monotonic()
            if wait_replicas and killed_at and not restarted and time.monotonic() > killed_at + 3:
                cluster.nodes[victim].start()  # rejoins as a replica of the promoted primary
                restarted = True
            try:
                acknowledged.append(await queue.submit({"service": "simulation",
                                                        "payload": PAYLOAD}))  # fmt: skip
                if killed_at and not recovered_at:
                    recovered_at = time.monotonic()
            except (RedisError, RedisClusterException, OSError, NotReplicated) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                refused += 1  # not acknowledged: the client knows it must retry
                await asyncio.sleep(0.05)
        # Wait until every job the queue still knows has ended.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(RedisError, RedisClusterException):
                statuses = await _statuses(redis, queue, acknowledged)
                if all(s in {"completed", "lost"} for s in statuses):
                    break
            await asyncio.sleep(0.5)
        # Every worker's wake-ups reach it on the promoted primary: its Waker moved its sharded
        # subscription there (a failed read refreshes the slot map; redis-py moves the channel).
        channels = {queue.keys.control_channel(f"fo-{i}") for i in range(WORKERS)}
        async with asyncio.timeout(20):
            while not channels <= await _shard_channels(redis, queue):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()

    statuses = await _statuses(redis, queue, acknowledged)
    lost = statuses.count("lost")
    assert statuses.count("completed") + lost == len(acknowledged), statuses
    # Never completed twice: one terminal event per job that survived.
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in acknowledged:
            pipe.xrange(queue.keys.events(job_id))
        streams = await pipe.execute()
    for job_id, entries, status in zip(acknowledged, streams, statuses, strict=True):
        done = [f for _, f in entries if f[b"type"] == b"completed"]
        if status == "completed":
            assert len(done) == 1, f"job {job_id} completed {len(done)} times"
        else:
            assert done == [], f"lost job {job_id} has a completed event"
    assert recovered_at, f"no submit succeeded after the kill: {errors}"
    if wait_replicas:
        assert lost == 0, f"{lost} submits acknowledged after WAIT were lost"
    await redis.aclose()
    with capsys.disabled():
        print(
            f"\nfailover (WAIT replicas={wait_replicas}): {len(acknowledged)} submits "
            f"acknowledged, {refused} refused during "
            f"the failover (retryable), {lost} acknowledged but lost (not replicated before "
            f"the kill), 0 completed twice; submits flowed again "
            f"{recovered_at - killed_at:.2f} s after the SIGKILL (node timeout 1 s); "
            f"refusals by kind {errors}"
        )


async def _shard_channels(redis, queue: Queue) -> set[str]:
    """The shard channels with a subscriber on the primary that now owns the queue's slot."""
    try:
        node = redis.get_node_from_key(queue.keys.pending_count())
        names = await redis.execute_command("PUBSUB", "SHARDCHANNELS", target_nodes=node)
    except (RedisError, RedisClusterException):
        return set()
    return {text(name) for name in names}


async def _statuses(redis, queue: Queue, ids: list[str]) -> list[str]:
    """Each job's status, ``lost`` for a job the cluster no longer has."""
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(queue.keys.job(job_id), "status")
        raw = await pipe.execute()
    return ["lost" if value is None else text(value) for value in raw]
