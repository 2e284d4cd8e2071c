"""Several queues (issue 13 item 2): routing a submit by service, finding a job in whichever
queue holds it, a fair claim over several queues, and WAIT after a submit. On one node and on a
Redis Cluster, where each queue has a slot of its own."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from core_factories import make_caps, make_spec, with_settings
from pydantic import ValidationError

from emp_core.errors import InvalidInput, NotFound
from emp_core.jobs.job import JobStatus
from emp_core.queue.queue import Queue
from emp_core.queue.queues import Queues
from emp_core.queue.stats import history, merged, server_ms
from emp_core.redis import text
from emp_core.redis.client import connect
from emp_core.redis.replicated import NotReplicated
from emp_core.redis.server import LocalCluster
from emp_core.registry.workers import WorkerRegistry
from emp_core.settings import QueueSettings


@pytest.fixture
async def queues(redis: aioredis.Redis, settings: QueueSettings) -> Queues:
    """Two queues: ``simulation`` jobs go to ``…-gpu``, every other service to the default."""
    gpu = f"{settings.queue}-gpu"
    qs = Queues(redis, with_settings(settings, queue_routes={"simulation": gpu}))
    await qs.default.functions.load()
    return qs


def test_routes_are_read_from_one_string() -> None:
    s = QueueSettings(queue="cpu", queue_routes="sdxl=gpu-a, flux = gpu-b,")  # type: ignore[arg-type]
    assert s.queue_routes == {"sdxl": "gpu-a", "flux": "gpu-b"}
    assert s.queue_for("sdxl") == "gpu-a"
    assert s.queue_for("simulation") == "cpu"
    assert s.queue_names == ["cpu", "gpu-a", "gpu-b"]


@pytest.mark.parametrize("routes", ["sdxl", "sdxl=", "=gpu", "sdxl=gpu a", "sdxl=gpu{x}"])
def test_a_bad_route_is_refused_naming_it(routes: str) -> None:
    with pytest.raises(ValidationError, match="is not SERVICE=QUEUE"):
        QueueSettings(queue_routes=routes)  # type: ignore[arg-type]


async def test_a_submit_goes_to_its_services_queue_and_is_found_there(queues: Queues) -> None:
    default, gpu = queues.default, queues.for_service("simulation")
    assert gpu is not default
    sim = await queues.submit(make_spec(service="simulation"))
    other = await queues.submit(make_spec(service="render"))

    assert await gpu.redis.exists(gpu.keys.job(sim)) == 1
    assert await default.redis.exists(default.keys.job(sim)) == 0
    assert (await queues.get(other)).service == "render"
    assert (await queues.get(sim)).service == "simulation"
    assert await queues.locate(sim) is gpu
    assert await queues.depth() == {"simulation": 1, "render": 1}

    assert await queues.cancel(sim) == "pending"
    assert (await gpu.get(sim)).status is JobStatus.CANCELLED
    with pytest.raises(NotFound, match="job nope does not exist"):
        await queues.get("nope")
    with pytest.raises(NotFound):
        await queues.cancel("nope")


async def test_a_mixed_batch_keeps_its_order_and_names_a_bad_job(queues: Queues) -> None:
    ids = await queues.submit_many(
        [make_spec(service="simulation"), make_spec(service="render"), make_spec()]
    )
    assert [(await queues.get(i)).service for i in ids] == ["simulation", "render", "simulation"]
    assert await queues.locate(ids[1]) is queues.default
    with pytest.raises(InvalidInput, match=r"^job 1: "):
        await queues.submit_many([make_spec(), {"priority": 10}])
    assert await queues.depth() == {"simulation": 2, "render": 1}


async def test_a_deep_backlog_in_one_queue_does_not_starve_another(
    redis: aioredis.Redis, settings: QueueSettings
) -> None:
    """One worker serves queues ``deep`` (40 jobs) and ``shallow`` (5 jobs, submitted last): the
    claim alternates, so shallow's k-th job is claimed by the worker's 2k-th claim, not after the
    40 others; every job is reported to its own queue."""
    names = [f"{settings.queue}-deep", f"{settings.queue}-shallow"]
    qs = Queues(redis, settings, names)
    await qs.default.functions.load()
    deep, shallow = qs.named(names[0]), qs.named(names[1])
    await deep.submit_many([make_spec() for _ in range(40)])
    await shallow.submit_many([make_spec(priority=0) for _ in range(5)])
    caps = make_caps(worker_id="w-both")

    order: list[str] = []
    while (result := await qs.claim(caps, slot=0)).claimed is not None:
        claimed = result.claimed
        order.append(claimed.queue)
        await qs.of(claimed).complete(claimed, {"from": claimed.queue})

    shallow_claims = [n for n, q in enumerate(order, 1) if q == names[1]]
    assert shallow_claims == [2, 4, 6, 8, 10]
    assert len(order) == 45
    assert await qs.depth() == {}
    assert await deep.depth() == {}
    assert await shallow.depth() == {}


async def test_a_slot_woken_by_a_queues_job_claims_there_first(
    redis: aioredis.Redis, settings: QueueSettings
) -> None:
    """A slot idle in queues a and b is woken by b's job (the Lua rang it alone); a's job arrived
    meanwhile. The claim that follows tries b first (``first``, from ``WakeSignal.queue``), so
    b's job is not left to an idle fallback; the rotation's turn is not spent on it."""
    names = [f"{settings.queue}-a", f"{settings.queue}-b"]
    qs = Queues(redis, settings, names)
    await qs.default.functions.load()
    a, b = qs.named(names[0]), qs.named(names[1])
    caps = make_caps(worker_id="w-woken")
    assert (await qs.claim(caps, slot=0)).claimed is None  # idle in both; the turn moves to b
    on_a = await a.submit(make_spec())
    on_b = await b.submit(make_spec())
    woken = await qs.claim(caps, slot=0, first=names[1])
    assert woken.claimed is not None
    assert (woken.claimed.id, woken.claimed.queue) == (on_b, names[1])
    # Without a hint the turn is where it was: b's turn (now empty), then a.
    plain = await qs.claim(caps, slot=0)
    assert plain.claimed is not None
    assert plain.claimed.id == on_a
    # A hint naming no served queue is ignored.
    assert (await qs.claim(caps, slot=0, first="nowhere")).claimed is None


async def test_an_empty_claim_asks_each_queue_once_and_names_no_job(queues: Queues) -> None:
    caps = make_caps()
    result = await queues.claim(caps, slot=0)
    assert result.claimed is None
    job_id = await queues.submit(make_spec())  # to the second queue: the next claim starts there
    result = await queues.claim(caps, slot=0)
    assert result.claimed is not None
    assert result.claimed.id == job_id
    assert result.claimed.queue == queues.for_service("simulation").keys.queue


async def _idle_slots(queue: Queue, service: str) -> set[str]:
    """The slots in the idle sets of ``service``'s profiles in ``queue``."""
    profiles = await queue.redis.zrange(queue.keys.profiles_seen(service), 0, -1)
    return {
        text(member)
        for pid in profiles
        for member in await queue.redis.zrange(queue.keys.idle(service, text(pid)), 0, -1)
    }


async def test_a_slot_busy_in_one_queue_leaves_the_others_idle_sets(queues: Queues) -> None:
    """Two slots of one worker go idle in both queues; slot 0 takes a job of the default queue
    and leaves the other queue's idle set, so that queue's next job wakes slot 1, not the busy
    slot 0."""
    caps = make_caps(services=["simulation", "render"])
    gpu = queues.for_service("simulation")
    for slot in (0, 1):
        assert (await queues.claim(caps, slot=slot)).claimed is None
    assert await _idle_slots(gpu, "simulation") == {"w1#0", "w1#1"}
    job_id = await queues.submit(make_spec(service="render"))  # the default queue's
    result = await queues.claim(caps, slot=0)
    assert result.claimed is not None
    assert result.claimed.id == job_id
    assert await _idle_slots(gpu, "simulation") == {"w1#1"}
    assert "w1#0" not in await _idle_slots(queues.default, "render")  # (the job woke w1#1)
    await queues.rest(caps, 2)
    assert await _idle_slots(gpu, "simulation") == set()


async def test_wait_replicas_refuses_a_submit_no_replica_confirmed(
    redis: aioredis.Redis, settings: QueueSettings
) -> None:
    """The test Redis has no replica: with ``redis_wait_replicas=1`` the submit is written (a
    retry with its Idempotency-Key finds it) but answered with ``NotReplicated`` (HTTP 503)."""
    queue = Queue(redis, with_settings(settings, redis_wait_replicas=1, redis_wait_timeout_ms=20))
    await queue.functions.load()
    with pytest.raises(NotReplicated, match="reached 0 of 1 replicas"):
        await queue.submit(make_spec())
    assert await queue.depth() == {"simulation": 1}


async def test_wait_replicas_on_a_cluster_with_replicas(tmp_path: Path) -> None:
    """3 primaries with a replica each: a submit answered after WAIT 1 is on its replica."""
    with LocalCluster(tmp_path / "cluster", primaries=3, replicas=1) as cluster:
        client = connect(cluster.url)
        try:
            settings = QueueSettings(
                redis_url=cluster.url, queue=f"w{uuid.uuid4().hex[:8]}", redis_wait_replicas=1
            )
            queue = Queue(client, settings)
            await queue.functions.load()
            job_id = await queue.submit(make_spec())
            primary = client.get_node_from_key(queue.keys.job(job_id))
            assert await _on_replica_of(cluster, primary.port, queue.keys.job(job_id)) == 1
            strict = Queue(client, with_settings(settings, redis_wait_replicas=2,
                                                 redis_wait_timeout_ms=20))  # fmt: skip
            with pytest.raises(NotReplicated, match="reached 1 of 2 replicas"):
                await strict.submit(make_spec())
        finally:
            await client.aclose()


async def _on_replica_of(cluster: LocalCluster, primary_port: int, key: str) -> int:
    """EXISTS ``key`` on the replica of the primary at ``primary_port`` (READONLY first: a
    cluster replica answers reads only after it)."""
    for node in cluster.nodes:
        client = aioredis.Redis(port=node.port)
        try:
            info = await client.info("replication")
            if info.get("role") == "slave" and int(info["master_port"]) == primary_port:
                pipe = client.pipeline(transaction=False)
                pipe.execute_command("READONLY")
                pipe.exists(key)
                return int((await pipe.execute())[1])
        finally:
            await client.aclose()
    raise AssertionError(f"no replica of the primary on port {primary_port}")


async def test_the_worker_list_spans_the_queues(queues: Queues) -> None:
    """A web process lists the workers of every queue, a worker serving two of them once."""
    default, sim = queues.default, queues.for_service("simulation")
    for keys, worker_id in ((default.keys, "w-home"), (sim.keys, "w-sim"),
                            (default.keys, "w-both"), (sim.keys, "w-both")):  # fmt: skip
        await WorkerRegistry(queues.redis, keys).register(make_caps(worker_id=worker_id))
    registry = WorkerRegistry(queues.redis, default.keys, also=[q.keys for q in queues])
    assert sorted(w.worker_id for w in await registry.live()) == ["w-both", "w-home", "w-sim"]
    home_only = WorkerRegistry(queues.redis, default.keys)
    assert sorted(w.worker_id for w in await home_only.live()) == ["w-both", "w-home"]


async def test_the_last_hour_sums_the_queues(queues: Queues) -> None:
    """The dashboard's counters over several queues: each queue's minutes, summed."""
    await queues.submit_many([make_spec(), make_spec(), make_spec(service="render")])
    now = await server_ms(queues.redis)
    each = [await history(queues.redis, q.keys, now_ms=now) for q in queues]
    both = merged(each)
    assert [sum(h.series("submitted", "simulation")) for h in each] == [0, 2]
    assert [sum(h.series("submitted", "render")) for h in each] == [1, 0]
    assert sum(both.series("submitted", "simulation")) == 2
    assert sum(both.series("submitted", "render")) == 1
    assert len(both.minutes) == 60
    assert merged(each[:1]) is each[0]


def test_serving_is_the_queues_a_workers_services_are_routed_to(
    redis: aioredis.Redis, settings: QueueSettings
) -> None:
    """What the API serves a gRPC worker from: its services' queues, the default first, over
    the same ``Queue`` objects with a claim rotation of its own; an unrouted service goes to the
    default."""
    routes = {"simulation": f"{settings.queue}-sim", "sdxl": f"{settings.queue}-gpu"}
    qs = Queues(redis, with_settings(settings, queue_routes=routes))
    both = qs.serving(["sdxl", "simulation"])
    assert both.names == [f"{settings.queue}-sim", f"{settings.queue}-gpu"]
    assert both.named(f"{settings.queue}-gpu") is qs.named(f"{settings.queue}-gpu")
    assert both is not qs.serving(["sdxl", "simulation"])  # one rotation per worker
    assert qs.serving(["upscale", "simulation"]).names == [settings.queue, f"{settings.queue}-sim"]
    home = qs.serving(["upscale"])
    assert (home.names, home.default) == ([settings.queue], qs.default)
