"""A worker serving several queues (issue 13 item 2): it claims from each in turn, hears every
queue's wake-ups, registers in each, and reports every job (lease, progress, outcome) to the
queue it came from."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from grpc_api import grpc_api
from worker_helpers import eventually, make_worker_settings

from emp_core.errors import InvalidInput
from emp_core.jobs.job import JobStatus
from emp_core.queue.queue import Queue
from emp_core.settings import QueueSettings
from emp_worker.config import WorkerSettings
from emp_worker.connectors import SimulationConnector
from emp_worker.main import _queues
from emp_worker.worker import Worker


def _two(redis, settings: QueueSettings) -> tuple[Queue, Queue]:
    names = (f"{settings.queue}-a", f"{settings.queue}-b")
    return tuple(Queue(redis, settings.model_copy(update={"queue": n})) for n in names)  # type: ignore[return-value]


async def test_a_burst_worker_drains_both_queues_reporting_each_job_to_its_own(
    redis, queue: Queue, settings
):
    a, b = _two(redis, settings)
    deep = await a.submit_many([{"service": "simulation"} for _ in range(12)])
    shallow = await b.submit_many([{"service": "simulation"} for _ in range(3)])
    worker = Worker(
        make_worker_settings(settings, queues=[a.keys.queue, b.keys.queue]), redis=redis
    )

    stats = await worker.run()

    assert stats.completed == 15
    for q, ids in ((a, deep), (b, shallow)):
        for job_id in ids:
            job = await q.get(job_id)
            assert job.status is JobStatus.COMPLETED
            assert job.attempts == 1
            assert job.worker_id == worker.id
        assert await q.depth() == {}
    # Taken in turn: b's three jobs were claimed by the worker's claims 2, 4 and 6, so before
    # a's fourth (claim 7), not after a's twelve (claimed_at is in ms: ties count as before).
    a_times = sorted([(await a.get(i)).claimed_at for i in deep])  # type: ignore[type-var]
    b_times = [(await b.get(i)).claimed_at for i in shallow]
    assert max(b_times) <= a_times[3]  # type: ignore[type-var,operator]
    # One claim per job, and the burst ends after one empty round over both queues.
    assert stats.claims <= 15 + 2


async def test_an_idle_worker_is_woken_by_either_queue_and_registered_in_both(
    redis, queue: Queue, settings
):
    a, b = _two(redis, settings)
    # The fallback is a minute: a worker that polled would not see the jobs within the test.
    worker = Worker(
        make_worker_settings(
            settings, queues=[a.keys.queue, b.keys.queue], burst=False, idle_wait_seconds=60,
            lease_seconds=0.6, simulation_steps=4, simulation_step_time=0.25,
        ),
        redis=redis,
    )  # fmt: skip
    run = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), 10)
        for q in (a, b):
            assert await redis.zscore(q.keys.workers(), worker.id) is not None
        await eventually(lambda: _claims_at_least(worker, 1))  # idle on both queues now

        # A job of a second queue outlives its lease (1 s of work, 0.6 s lease): the renewals
        # must reach that queue, or the job would be lost and run again.
        for q in (b, a):
            job_id = await q.submit({"service": "simulation"})
            await eventually(lambda q=q, j=job_id: _completed(q, j), within=10)
            job = await q.get(job_id)
            assert job.attempts == 1
            assert job.worker_id == worker.id
        assert worker.lease_renewals >= 2
        # Woken, not polling: per job one claim that takes it and one empty round after it.
        assert worker.stats.claims <= 1 + 2 * 2
    finally:
        worker.stop()
        await asyncio.wait_for(run, 10)
    for q in (a, b):
        assert await redis.zscore(q.keys.workers(), worker.id) is None


def test_queue_flags_and_the_grpc_transport() -> None:
    assert _queues(["gpu"]) == {"queue": "gpu", "queues": ["gpu"]}
    assert _queues(["gpu", "cpu,gpu"]) == {"queues": ["gpu", "cpu", "gpu"]}
    s = WorkerSettings(queues="gpu, cpu,gpu")  # type: ignore[arg-type]
    assert s.queue_names_served == ["gpu", "cpu"]
    assert WorkerSettings(**_queues(["gpu"])).queue_names_served == ["gpu"]
    assert WorkerSettings().queue_names_served == ["default"]
    grpc = {"transport": "grpc", "api_address": "h:1", "api_token": "t"}
    # Over gRPC the API picks the queues (by route): even one --queue is refused, not ignored.
    for given in (["a", "b"], ["a"]):
        with pytest.raises(InvalidInput, match="--transport grpc takes no --queue"):
            WorkerSettings(**grpc, **_queues(given))  # type: ignore[arg-type]
    assert WorkerSettings(**grpc, queue="gpu").transport == "grpc"  # EMP_QUEUE alone is fine


async def _claims_at_least(worker: Worker, n: int) -> bool:
    return worker.stats.claims >= n


async def _completed(queue: Queue, job_id: str) -> bool:
    return (await queue.get(job_id)).status is JobStatus.COMPLETED


async def test_a_grpc_burst_worker_is_served_by_the_queues_its_services_are_routed_to(
    redis, redis_url: str, tmp_path: Path
) -> None:
    """Over gRPC the worker names no queue: the API routes (EMP_QUEUE_ROUTES) say which queues
    serve its services, and each job's reports (lease, progress, outcome) go to its own."""
    tag = uuid.uuid4().hex[:10]
    routes = {f"sa{tag}": f"qa{tag}", f"sb{tag}": f"qb{tag}"}
    env = {"EMP_QUEUE_ROUTES": ",".join(f"{s}={q}" for s, q in routes.items())}
    with grpc_api(redis_url, tmp_path, **env) as api:
        home = QueueSettings(redis_url=redis_url, queue=api.queue)
        queues = {s: Queue(redis, home.model_copy(update={"queue": q})) for s, q in routes.items()}
        submitted = {
            s: await q.submit_many([{"service": s} for _ in range(3)]) for s, q in queues.items()
        }
        settings = make_worker_settings(
            home, services=list(routes), transport="grpc", api_address=api.address,
            api_token=api.token, redis_url="redis://127.0.0.1:1/0",
        )  # fmt: skip
        connectors = {s: SimulationConnector(steps=2, step_time=0) for s in routes}
        stats = await Worker(settings, connectors=connectors).run()
    assert stats.completed == 6
    for service, queue in queues.items():
        for job_id in submitted[service]:
            job = await queue.get(job_id)
            assert (job.status, job.attempts) == (JobStatus.COMPLETED, 1)
        assert await queue.depth() == {}
        assert await redis.zscore(queue.keys.workers(), settings.worker_id) is None
