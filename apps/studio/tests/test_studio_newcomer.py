"""Issue 15's studio points: ownerless jobs in an admin's "Everyone", why a job waits, the nav on
an unknown URL, and the starter patterns shown and importable while none is saved."""

from __future__ import annotations

from datetime import UTC, datetime

from studio_helpers import Visitor

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.jobs.job import Job
from emp_core.jobs.waiting import explain
from emp_core.queue.queue import Queue
from emp_core.registry.machines import (
    MachineRegistry,
    MachineState,
    MachineStatus,
    MachineWorker,
    SlotState,
)
from emp_core.registry.workers import WorkerRegistry


async def test_everyone_includes_jobs_without_an_owner(admin: Visitor, queue: Queue) -> None:
    job_id = await queue.submit({"service": "simulation"})  # as the CLI does: no customer
    page = await admin.get("/jobs")
    assert page.status_code == 200
    assert job_id[:8] in page.text


async def test_a_waiting_job_says_which_requirement_no_live_worker_meets(
    admin: Visitor, queue: Queue
) -> None:
    registry = WorkerRegistry(queue.redis, queue.keys)
    caps = WorkerCapabilities.model_validate(
        {"worker_id": "w-small", "services": ["simulation"], "hardware": {"gpu_memory_gb": 8}}
    )
    await registry.register(caps)
    big = await queue.submit({"service": "simulation", "requirements": {"gpu_memory_gb": 16}})
    page = await admin.get(f"/jobs/{big}")
    assert 'data-testid="job-waiting"' in page.text
    assert "gpu_memory_gb ≥ 16" in page.text

    other = await queue.submit({"service": "sdxl"})
    page = await admin.get(f"/jobs/{other}")
    assert "service sdxl" in page.text

    fits = await queue.submit({"service": "simulation"})
    page = await admin.get(f"/jobs/{fits}")
    assert 'data-testid="job-waiting-able">w-small' in page.text


async def test_an_unknown_url_keeps_the_signed_in_nav(alice: Visitor) -> None:
    page = await alice.get("/no/such/page")
    assert page.status_code == 404
    assert 'data-testid="signed-in-as"' in page.text
    assert 'data-testid="nav-jobs"' in page.text


async def test_starter_patterns_show_until_imported(admin: Visitor) -> None:
    page = await admin.get("/admin/patterns")
    assert 'data-testid="starter-in-use"' in page.text
    assert page.text.count('data-testid="starter-row"') >= 10
    form = await admin.get("/admin/patterns/new")
    assert 'data-testid="first-pattern-warning"' in form.text

    done = await admin.post("/admin/patterns/import-starter")
    assert done.status_code == 303, done.text
    page = await admin.get(done.headers["location"])
    assert 'data-testid="starter-in-use"' not in page.text
    assert "Imported the starter set" in page.text
    assert "True" not in page.text


async def test_the_machines_page_shows_workers_gpus_restarts_and_heartbeat(
    admin: Visitor, alice: Visitor, queue: Queue
) -> None:
    now = datetime.now(UTC)
    workers = [
        MachineWorker(worker_id=f"m1-simulation-{i}", service="simulation", index=i, gpu=i,
                      state=SlotState.RUNNING, pid=100 + i, restarts=i, started_at=now)
        for i in range(2)
    ]  # fmt: skip
    status = MachineStatus(
        machine_id="m1", hostname="gpu-host", gpus=2, state=MachineState.RUNNING,
        workers=workers, started_at=now, last_seen=now,
    )  # fmt: skip
    await MachineRegistry(queue.redis, queue.keys).report(status)
    page = await admin.get("/admin/machines")
    assert page.status_code == 200
    assert 'data-machine-id="m1"' in page.text
    assert page.text.count('data-testid="machine-worker"') == 2
    assert 'data-testid="machine-gpus">2<' in page.text
    assert 'data-testid="machine-restarts">1<' in page.text
    assert 'data-testid="nav-machines"' in page.text
    assert (await alice.get("/admin/machines")).status_code == 403


def test_workers_of_other_services_do_not_hide_the_unmet_requirement() -> None:
    job = Job.model_validate({
        "id": "j1", "service": "simulation", "status": "pending",
        "requirements": {"gpu_memory_gb": 999}, "created_at": datetime.now(UTC), "priority": 100,
        "payload": {}, "max_attempts": 3, "timeout_s": 60, "class_id": "c",
    })  # fmt: skip
    small = WorkerCapabilities(worker_id="sim", services=["simulation"])
    other = WorkerCapabilities(worker_id="diff", services=["diffusers"])
    assert explain(job, [small, other]).unmet_by_all == ["gpu_memory_gb ≥ 999"]
    assert explain(job, [other]).unmet_by_all == ["service simulation"]
