"""``make bench-cluster``: claim+complete throughput and claim latency with 1, 2 and 3 queues, on
one Redis node and on a local three-primary Redis Cluster, in one run, with each node's Redis CPU;
then how long a message takes from ``SPUBLISH`` to a subscription over 1 and 3 queues' channels
(a worker serving several queues, the API's event hub).

Each queue is drained by a process of its own (``--coroutines`` claim-then-complete loops, one
job at a time each), so the client side scales with the queues too. On the cluster the queue
names are chosen so that each queue's slot sits on a different primary: the figures show whether
throughput grows as the queues spread over shards. On a 2-core machine the client processes and
the Redis servers share the same two cores, so the growth is bounded by the machine, not by
Redis; the per-node CPU columns show where the load went.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis as sync_redis
from rich.console import Console
from rich.table import Table

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue import Queue
from emp_core.queue.keys import Keys
from emp_core.redis import connect
from emp_core.redis.cluster import is_cluster
from emp_core.redis.server import LocalCluster, RedisServer
from emp_core.redis.subscription import ShardSubscription
from emp_core.settings import QueueSettings


def _queue_names(url: str, count: int) -> list[str]:
    """``count`` queue names whose slots sit on different primaries (any names on one node)."""
    return asyncio.run(_spread_names(url, count))


async def _spread_names(url: str, count: int) -> list[str]:
    client = connect(url)
    try:
        if not is_cluster(client):
            return [f"bench{i}" for i in range(count)]
        await client.initialize()
        names: list[str] = []
        owners: set[str] = set()
        n = 0
        while len(names) < count:
            name = f"bench{n}"
            n += 1
            node = client.get_node_from_key(f"emp:{{{name}}}:seq")  # type: ignore[attr-defined]
            if node.name not in owners:
                owners.add(node.name)
                names.append(name)
        return names
    finally:
        await client.aclose()


async def _drain(url: str, name: str, jobs: int, coroutines: int) -> dict[str, Any]:
    redis = connect(url)
    queue = Queue(redis, QueueSettings(redis_url=url, queue=name))
    await queue.functions.load()
    for start in range(0, jobs, 1000):
        await queue.submit_many([{"service": "simulation"}] * min(1000, jobs - start))
    latencies: list[float] = []
    done = 0

    async def loop(caps: WorkerCapabilities) -> None:
        nonlocal done
        while True:
            began = time.perf_counter()
            claimed = (await queue.claim(caps)).claimed
            latencies.append(time.perf_counter() - began)
            if claimed is None:
                return
            await queue.complete(claimed, None)
            done += 1

    began = time.perf_counter()
    await asyncio.gather(
        *(loop(WorkerCapabilities(worker_id=f"b{uuid.uuid4().hex[:6]}", services=["simulation"]))
          for _ in range(coroutines))
    )  # fmt: skip
    elapsed = time.perf_counter() - began
    await redis.aclose()
    return {"done": done, "seconds": elapsed, "latencies": latencies}


def _worker(url: str, name: str, jobs: int, coroutines: int, out: Any) -> None:
    out.put(asyncio.run(_drain(url, name, jobs, coroutines)))


def _cpu(ports: list[int]) -> dict[int, float]:
    out = {}
    for port in ports:
        client = sync_redis.Redis(port=port)
        info = client.info("cpu")
        out[port] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        client.close()
    return out


def run_shape(
    url: str, ports: list[int], queues: int, jobs: int, coroutines: int
) -> dict[str, Any]:
    names = _queue_names(url, queues)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    before = _cpu(ports)
    began = time.perf_counter()
    procs = [
        ctx.Process(target=_worker, args=(url, name, jobs, coroutines, results)) for name in names
    ]
    for proc in procs:
        proc.start()
    outs = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    wall = time.perf_counter() - began
    after = _cpu(ports)
    latencies = sorted(x for o in outs for x in o["latencies"])
    busiest = max(o["seconds"] for o in outs)
    return {
        "jobs_per_s": sum(o["done"] for o in outs) / busiest,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "cpu": {port: after[port] - before[port] for port in ports},
        "wall": wall,
    }


async def _delivery(url: str, queues: int, messages: int) -> list[float]:
    """Seconds from ``SPUBLISH`` to a listening task's ``get``, one message at a time, each on a
    random queue's channel after a random pause, as a worker's or the hub's listener hears them.
    Both random: a reader that visits the nodes in turn is caught at any point of its round (in
    a fixed order with short pauses it would keep pace with the publisher and look fast)."""
    client = connect(url)
    try:
        channels = [Keys("emp", name).events_channel() for name in await _spread_names(url, queues)]
        if is_cluster(client):
            await client.initialize()
        async with ShardSubscription(client, channels) as subscription:
            heard: asyncio.Queue[float] = asyncio.Queue()

            async def listen() -> None:
                async for message in subscription.listen():
                    if message["type"] == "smessage":
                        heard.put_nowait(time.perf_counter())

            listener = asyncio.create_task(listen())
            seconds = []
            try:
                for _ in range(messages):
                    await asyncio.sleep(random.uniform(0.001, 0.03))
                    sent = time.perf_counter()
                    await client.spublish(random.choice(channels), "x")  # type: ignore[union-attr]
                    seconds.append(await asyncio.wait_for(heard.get(), 5) - sent)
            finally:
                listener.cancel()
            return sorted(seconds)
    finally:
        await client.aclose()


def _measure(tmp: Path, jobs: int, coroutines: int, messages: int) -> tuple[list, list]:
    rows: list[tuple[str, ...]] = []
    delivery: list[tuple[str, ...]] = []
    with RedisServer(tmp / "node") as node, LocalCluster(tmp / "cluster") as cluster:
        shapes = [
            ("one node", node.url, [node.port]),
            ("cluster, 3 primaries", cluster.url, [n.port for n in cluster.nodes]),
        ]
        for label, url, ports in shapes:
            for queues in (1, 2, 3):
                r = run_shape(url, ports, queues, jobs, coroutines)
                cpu = " / ".join(f"{r['cpu'][p]:.2f}" for p in ports)
                rows.append((label, str(queues), f"{r['jobs_per_s']:,.0f}",
                             f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", cpu))  # fmt: skip
        for label, url, _ in shapes:
            for queues in (1, 3):
                s = [x * 1000 for x in asyncio.run(_delivery(url, queues, messages))]
                p50, p99 = statistics.median(s), s[int(len(s) * 0.99)]
                delivery.append((label, str(queues), f"{p50:.2f}", f"{p99:.2f}", f"{s[-1]:.2f}"))
    return rows, delivery


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.cluster", description=__doc__)
    parser.add_argument("--jobs", type=int, default=4000, help="jobs per queue")
    parser.add_argument("--coroutines", type=int, default=8, help="claim loops per queue")
    parser.add_argument("--messages", type=int, default=300, help="messages per delivery row")
    args = parser.parse_args()
    console = Console()
    table = Table(title="claim+complete, one process per queue (no-op jobs)")
    for column in (
        "shape",
        "queues",
        "jobs/s",
        "claim p50 ms",
        "claim p99 ms",
        "Redis CPU s per node",
    ):
        table.add_column(column, justify="right" if column != "shape" else "left")
    delivery = Table(title="SPUBLISH to a subscription over the queues' channels, one at a time")
    for column in ("shape", "queues", "p50 ms", "p99 ms", "max ms"):
        delivery.add_column(column, justify="right" if column != "shape" else "left")
    with tempfile.TemporaryDirectory(prefix="emp-bench-cluster-") as tmp:
        rows, delivered = _measure(Path(tmp), args.jobs, args.coroutines, args.messages)
    for row in rows:
        table.add_row(*row)
    for row in delivered:
        delivery.add_row(*row)
    console.print(table)
    console.print(
        "[dim]Each queue lives in one slot; on the cluster the queues were placed on different "
        "primaries. Client processes and Redis share this machine's cores.[/dim]"
    )
    console.print(delivery)
    console.print(
        "[dim]One ShardSubscription (as a worker serving the queues, or the API's event hub, "
        "holds); publisher and subscriber in one process.[/dim]"
    )


if __name__ == "__main__":
    main()
