"""Job forensics and operator actions over HTTP (issue 17): who may see and do what, the audit
record of every action, and forensics after Redis has forgotten the job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from api_helpers import Api, job_body

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.queue import ClaimedJob, Queue
from emp_core.registry.workers import WorkerRegistry
from emp_sql import Database, DatabaseSettings
from emp_sql.analytics import model_of
from emp_sql.archive import ArchiveProjector
from emp_web.testing import Account


def worker(n: int) -> WorkerCapabilities:
    return WorkerCapabilities(worker_id=f"m{n}-simulation-0", machine_id=f"m{n}",
                              services=["simulation"])  # fmt: skip


async def take(queue: Queue, caps: WorkerCapabilities) -> ClaimedJob:
    result = await queue.claim(caps)
    assert result.claimed is not None
    return result.claimed


async def submit(api: Api, account: Account, **body: Any) -> str:
    response = await api.http.post("/api/jobs", json=job_body(**body), headers=account.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_forensics_of_three_attempts_live_and_archived(
    api: Api, accounts: dict[str, Account], queue: Queue, database_url: str
) -> None:
    alice, bob, admin = accounts["alice"], accounts["bob"], accounts["admin"]
    job_id = await submit(api, alice, max_attempts=3)
    for n in (1, 2):
        claimed = await take(queue, worker(n))
        await queue.progress(claimed, 20 * n)
        await queue.fail(claimed, f"failure {n}", delay_s=0)
    third = await take(queue, worker(3))
    await queue.complete(third, {"ok": True})

    url = f"/api/jobs/{job_id}/forensics"
    seen = (await api.http.get(url, headers=admin.headers)).json()
    f = seen["forensics"]
    assert f["source"] == "redis"
    assert [(a["worker_id"], a["machine_id"], a["outcome"], a["progress"], a["error"])
            for a in f["attempts"]] == [
        ("m1-simulation-0", "m1", "retrying", 20.0, "failure 1"),
        ("m2-simulation-0", "m2", "retrying", 40.0, "failure 2"),
        ("m3-simulation-0", "m3", "completed", 100.0, None),
    ]  # fmt: skip
    assert seen["actions"] == []
    owner = (await api.http.get(url, headers=alice.headers)).json()
    assert owner["actions"] is None
    assert [a["outcome"] for a in owner["forensics"]["attempts"]] == [
        "retrying", "retrying", "completed",
    ]  # fmt: skip
    assert {a["worker_id"] for a in owner["forensics"]["attempts"]} == {None}
    assert (await api.http.get(url, headers=bob.headers)).status_code == 404
    assert (await api.http.get(url)).status_code == 401

    # After Redis retention: the archive holds the stream, and the attempts read the same.
    db = Database(DatabaseSettings(database_url=database_url))
    try:
        await ArchiveProjector(queue, db).project([job_id])
    finally:
        await db.dispose()
    # The projector also keeps the service's latest run times, for pending jobs' ETAs.
    assert await queue.redis.llen(queue.keys.runtimes("simulation")) >= 1
    await queue.redis.delete(queue.keys.job(job_id), queue.keys.events(job_id))
    later = (await api.http.get(url, headers=admin.headers)).json()["forensics"]
    assert later["source"] == "archive"
    assert later["attempts"] == f["attempts"]
    assert [e["type"] for e in later["events"]] == [e["type"] for e in f["events"]]


async def test_retry_requeue_are_admin_only_and_audited(
    api: Api, accounts: dict[str, Account], queue: Queue
) -> None:
    alice, admin = accounts["alice"], accounts["admin"]
    job_id = await submit(api, alice, max_attempts=1)
    claimed = await take(queue, worker(1))
    await queue.fail(claimed, "boom", retryable=False)
    retry = f"/api/admin/jobs/{job_id}/retry"
    body = {"reason": "driver fixed", "priority": 700}
    assert (await api.http.post(retry, json=body, headers=alice.headers)).status_code == 403
    missing_reason = await api.http.post(retry, json={"priority": 1}, headers=admin.headers)
    assert missing_reason.status_code == 422
    assert "reason" in missing_reason.text
    done = await api.http.post(retry, json=body, headers=admin.headers)
    assert done.status_code == 200, done.text
    entry = done.json()
    assert (entry["action"], entry["actor_email"], entry["reason"], entry["touched"]) == (
        "retry", admin.email, "driver fixed", 1,
    )  # fmt: skip
    job = await queue.get(job_id)
    assert (job.status.value, job.attempts, job.priority) == ("pending", 0, 700)
    again = await api.http.post(retry, json=body, headers=admin.headers)
    assert again.status_code == 422  # not failed any more
    assert again.json()["error"]["field"] == "status"

    await take(queue, worker(2))  # now it is stuck on a worker
    requeue = f"/api/admin/jobs/{job_id}/requeue"
    assert (
        await api.http.post(requeue, json={"reason": "stuck"}, headers=alice.headers)
    ).status_code == 403
    moved = await api.http.post(requeue, json={"reason": "stuck"}, headers=admin.headers)
    assert moved.status_code == 200, moved.text
    assert moved.json()["params"] == {"previous_status": "claimed"}
    assert (await queue.get(job_id)).status.value == "pending"

    seen = (await api.http.get(f"/api/jobs/{job_id}/forensics", headers=admin.headers)).json()
    assert [(a["action"], a["actor_email"]) for a in seen["actions"]] == [
        ("retry", admin.email), ("requeue", admin.email),
    ]  # fmt: skip
    reasons = [e.get("reason") or "" for e in seen["forensics"]["events"]]
    assert any(r.startswith("driver fixed (operator action #") for r in reasons)
    assert [a["outcome"] for a in seen["forensics"]["attempts"]] == ["failed", "requeued"]


async def test_bulk_dry_run_retry_cancel_and_purge(
    api: Api, accounts: dict[str, Account], queue: Queue
) -> None:
    alice, admin = accounts["alice"], accounts["admin"]
    failed = [await submit(api, alice, max_attempts=1) for _ in range(3)]
    for _ in failed:
        await queue.fail(await take(queue, worker(1)), "boom", retryable=False)
    waiting = [await submit(api, alice, service="render") for _ in range(2)]
    body = {"action": "retry", "filter": {"status": "failed", "customer_id": alice.user_id},
            "reason": "outage over", "dry_run": True}  # fmt: skip
    assert (
        await api.http.post("/api/admin/jobs/bulk", json=body, headers=alice.headers)
    ).status_code == 403
    dry = (await api.http.post("/api/admin/jobs/bulk", json=body, headers=admin.headers)).json()
    assert (dry["matched"], dry["touched"], dry["action"]["dry_run"]) == (3, 0, True)
    assert {(await queue.get(j)).status.value for j in failed} == {"failed"}
    body["dry_run"] = False
    done = (await api.http.post("/api/admin/jobs/bulk", json=body, headers=admin.headers)).json()
    assert (done["matched"], done["touched"], done["batches"]) == (3, 3, 1)
    assert {(await queue.get(j)).status.value for j in failed} == {"pending"}

    cancel = {"action": "cancel", "filter": {"status": "pending", "service": "render"},
              "reason": "customer asked"}  # fmt: skip
    out = (await api.http.post("/api/admin/jobs/bulk", json=cancel, headers=admin.headers)).json()
    assert out["touched"] == 2
    assert {(await queue.get(j)).status.value for j in waiting} == {"cancelled"}
    bad = await api.http.post(
        "/api/admin/jobs/bulk", json={**cancel, "filter": {"status": "lost"}}, headers=admin.headers
    )
    assert bad.status_code == 422
    assert "status" in bad.text

    before = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    purge = {"before": before, "reason": "retention policy"}
    assert (
        await api.http.post("/api/admin/jobs/purge", json=purge, headers=alice.headers)
    ).status_code == 403
    purged = await api.http.post("/api/admin/jobs/purge", json=purge, headers=admin.headers)
    assert purged.status_code == 200, purged.text
    actions = (await api.http.get("/api/admin/actions", headers=admin.headers)).json()
    assert [a["action"] for a in actions][:4] == [
        "purge",
        "bulk_cancel",
        "bulk_retry",
        "bulk_retry",
    ]
    assert (await api.http.get("/api/admin/actions", headers=alice.headers)).status_code == 403


async def test_position_and_eta_of_a_pending_job(
    api: Api, accounts: dict[str, Account], queue: Queue
) -> None:
    alice, bob, admin = accounts["alice"], accounts["bob"], accounts["admin"]
    job_id = await submit(api, alice, requirements={"gpu_memory_gb": 40})
    url = f"/api/jobs/{job_id}/position"
    nobody = (await api.http.get(url, headers=alice.headers)).json()
    assert (nobody["reason"], nobody["eta_s"]) == ("no live worker can run this job", None)
    registry = WorkerRegistry(queue.redis, queue.keys)
    big = WorkerCapabilities(worker_id="big-0", services=["simulation"],
                             hardware={"gpu_memory_gb": 80})  # fmt: skip
    await registry.register(big)
    await queue.redis.lpush(queue.keys.runtimes("simulation"), 3000)
    seen = (await api.http.get(url, headers=admin.headers)).json()
    assert (seen["rank"], seen["eta_s"], seen["finish_eta_s"]) == (0, 0.0, 3.0)
    assert seen["eligible_workers"] == ["big-0"]
    assert (await api.http.get(url, headers=alice.headers)).json()["eligible_workers"] == []
    assert (await api.http.get(url, headers=bob.headers)).status_code == 404
    f = (await api.http.get(f"/api/jobs/{job_id}/forensics", headers=alice.headers)).json()
    assert f["position"]["rank"] == 0


async def test_analytics_from_the_archive(
    api: Api, accounts: dict[str, Account], queue: Queue, database_url: str
) -> None:
    alice, admin = accounts["alice"], accounts["admin"]
    done = [await submit(api, alice, max_attempts=2) for _ in range(3)]
    first = await take(queue, worker(1))
    await queue.fail(first, "flaky", delay_s=0)  # retried, then completes
    for _ in done:
        await queue.complete(await take(queue, worker(2)), None)
    lost = await submit(api, alice, max_attempts=1)
    await queue.fail(await take(queue, worker(3)), "boom", retryable=False)
    db = Database(DatabaseSettings(database_url=database_url))
    try:
        await ArchiveProjector(queue, db).project([*done, lost])
    finally:
        await db.dispose()
    assert (await api.http.get("/api/admin/analytics", headers=alice.headers)).status_code == 403
    stats = (await api.http.get("/api/admin/analytics?window=1h", headers=admin.headers)).json()
    (sim,) = [s for s in stats["services"] if s["service"] == "simulation"]
    assert (sim["completed"], sim["failed"], sim["retried"], sim["retried_completed"]) == (
        3,
        1,
        1,
        1,
    )
    assert sim["run_p50_s"] is not None
    assert stats["failures_by_worker"] == {"m3-simulation-0": 1}
    # The payloads name no model and neither do the requirements: one row, "any".
    assert [(m["service"], m["model"], m["finished"], m["failed"]) for m in stats["models"]] == [
        ("simulation", "any", 4, 1)
    ]
    bad = await api.http.get("/api/admin/analytics?window=1y", headers=admin.headers)
    assert bad.status_code == 422


def test_the_model_a_job_is_counted_under() -> None:
    assert model_of({"requirements": {"models": ["sdxl", "flux"]}, "payload": {"model": "x"}}) == (
        "flux+sdxl"
    )
    assert model_of({"requirements": {}, "payload": {"model": "sd15"}}) == "sd15"
    assert model_of({"payload": {"prompt": "a cat"}, "result": {"model": "tiny"}}) == "tiny"
    assert model_of({"payload": {"model": 3}, "result": "done"}) == "any"
