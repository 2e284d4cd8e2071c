"""The studio's forensics page and operator actions (issue 17): attempts with their workers for
admins, without them for the owner, 404 for anyone else; retry and bulk actions admin-only,
audited and shown on the page."""

from __future__ import annotations

from datetime import UTC, datetime

from studio_helpers import Visitor

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.queue import Queue
from emp_core.registry.machines import (
    MachineRegistry,
    MachineState,
    MachineStatus,
    MachineWorker,
    SlotState,
)
from emp_core.registry.workers import WorkerRegistry
from emp_web.testing import Account


def _worker(n: int) -> WorkerCapabilities:
    return WorkerCapabilities(
        worker_id=f"m{n}-simulation-0", machine_id=f"m{n}", services=["simulation"]
    )


async def _failed_then_completed(queue: Queue, customer: str) -> str:
    job_id = await queue.submit({"service": "simulation", "customer_id": customer})
    for n in (1, 2):
        claimed = (await queue.claim(_worker(n))).claimed
        assert claimed is not None
        await queue.fail(claimed, f"failure {n}", delay_s=0)
    third = (await queue.claim(_worker(3))).claimed
    assert third is not None
    await queue.complete(third, None)
    return job_id


async def test_forensics_page_for_admin_owner_and_stranger(
    admin: Visitor, alice: Visitor, bob: Visitor, accounts: dict[str, Account], queue: Queue
) -> None:
    job_id = await _failed_then_completed(queue, accounts["alice"].user_id)
    url = f"/jobs/{job_id}/forensics"
    page = (await admin.get(url)).text
    assert page.count('data-testid="attempt-row"') == 3
    assert page.count('data-outcome="retrying"') == 2
    assert 'data-outcome="completed"' in page
    for n in (1, 2, 3):
        assert f"m{n}-simulation-0" in page
    assert "failure 2" in page
    owner = (await alice.get(url)).text
    assert owner.count('data-testid="attempt-row"') == 3
    assert "m1-simulation-0" not in owner
    assert "Operator actions" not in owner
    assert (await bob.get(url)).status_code == 404
    job_page = (await alice.get(f"/jobs/{job_id}")).text
    assert 'data-testid="forensics-link"' in job_page


async def test_retry_from_the_page_is_admin_only_and_audited(
    admin: Visitor, alice: Visitor, accounts: dict[str, Account], queue: Queue
) -> None:
    job_id = await queue.submit(
        {"service": "simulation", "customer_id": accounts["alice"].user_id, "max_attempts": 1}
    )
    claimed = (await queue.claim(_worker(1))).claimed
    assert claimed is not None
    await queue.fail(claimed, "boom", retryable=False)
    await alice.get(f"/jobs/{job_id}/forensics")
    assert (await alice.post(f"/jobs/{job_id}/retry", {"reason": "x"})).status_code == 403
    page = (await admin.get(f"/jobs/{job_id}/forensics")).text
    assert 'data-testid="retry-form"' in page
    refused = await admin.post(f"/jobs/{job_id}/retry", {"reason": " "})
    assert refused.status_code == 422
    assert "reason" in refused.text
    done = await admin.post(f"/jobs/{job_id}/retry", {"reason": "fixed the driver"})
    assert done.status_code == 303
    page = (await admin.get(done.headers["location"])).text
    assert 'data-testid="action-done"' in page
    assert "fixed the driver" in page
    assert accounts["admin"].email in page
    assert (await queue.get(job_id)).status.value == "pending"


async def test_bulk_dry_run_then_run(admin: Visitor, alice: Visitor, queue: Queue) -> None:
    for _ in range(3):
        await queue.submit({"service": "render"})
    await admin.get("/admin/operations")
    form = {"action": "cancel", "status": "pending", "service": "render", "reason": "tidy"}
    dry = await admin.post("/admin/operations/bulk", {**form, "mode": "dry"})
    assert dry.status_code == 200
    assert "Dry run: 3 jobs would be cancelled" in dry.text
    assert (await queue.depth()).get("render") == 3
    run = await admin.post("/admin/operations/bulk", {**form, "mode": "run"})
    assert "3 of 3 jobs cancelled in 1 batch" in run.text
    assert (await queue.depth()).get("render", 0) == 0
    bad = await admin.post("/admin/operations/bulk", {**form, "status": "lost"})
    assert bad.status_code == 422
    assert "status" in bad.text
    await alice.get("/")
    assert (await alice.get("/admin/operations")).status_code == 403
    assert (await alice.post("/admin/operations/bulk", form)).status_code == 403


async def test_a_pending_job_shows_its_place_in_line(
    alice: Visitor, accounts: dict[str, Account], queue: Queue
) -> None:
    job_id = await queue.submit({"service": "simulation", "customer_id": accounts["alice"].user_id})
    page = (await alice.get(f"/jobs/{job_id}/forensics")).text
    assert "No live worker can run this job" in page
    await WorkerRegistry(queue.redis, queue.keys).register(_worker(1))
    await queue.redis.lpush(queue.keys.runtimes("simulation"), 2000)
    page = (await alice.get(f"/jobs/{job_id}/forensics")).text
    assert 'data-testid="position-rank">0<' in page
    assert 'data-testid="position-eta">' in page


async def test_machine_page_controls_and_a_machine_that_does_not_answer(
    admin: Visitor, alice: Visitor, queue: Queue
) -> None:
    status = MachineStatus(
        machine_id="quiet", hostname="h", pid=1, version="0", gpus=1, state=MachineState.RUNNING,
        workers=[MachineWorker(worker_id="quiet-simulation-0", service="simulation", index=0,
                               state=SlotState.RUNNING, pid=5)],
        started_at=datetime.now(UTC), last_seen=datetime.now(UTC),
    )  # fmt: skip
    await MachineRegistry(queue.redis, queue.keys).report(status)
    page = (await admin.get("/admin/machines/quiet")).text
    assert 'data-testid="drain-machine"' in page
    assert "quiet-simulation-0" in page
    # Nobody listens on its control channel: the page says so instead of hanging or failing.
    answer = await admin.post("/admin/machines/quiet/control", {"type": "drain"})
    assert answer.status_code == 200
    assert 'data-answered="no"' in answer.text
    assert "did not answer" in answer.text
    assert (await admin.get("/admin/machines/nowhere")).status_code == 404
    await alice.get("/")
    assert (await alice.get("/admin/machines/quiet")).status_code == 403
    assert (await alice.post("/admin/machines/quiet/control", {"type": "drain"})).status_code == 403


async def test_analytics_page(admin: Visitor, alice: Visitor, queue: Queue) -> None:
    page = await admin.get("/admin/analytics?window=1h")
    assert page.status_code == 200
    assert 'data-testid="analytics-services"' in page.text
    assert 'data-testid="analytics-models"' in page.text
    assert (await admin.get("/admin/analytics?window=1y")).status_code in (400, 422)
    await alice.get("/")
    assert (await alice.get("/admin/analytics")).status_code == 403
