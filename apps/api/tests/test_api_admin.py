"""Admin routes: the live workers and the queue's depth, age and idle/busy counts."""

from __future__ import annotations

from api_helpers import Api, job_body

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.queue import Queue
from emp_core.registry.workers import WorkerRegistry
from emp_web.testing import Account


async def test_workers_and_queue(api: Api, accounts: dict[str, Account], queue: Queue) -> None:
    alice, admin = accounts["alice"], accounts["admin"]
    registry = WorkerRegistry(queue.redis, queue.keys)
    busy = WorkerCapabilities(
        worker_id="gpu-0", machine_id="m1", services=["simulation"],
        hardware={"gpu_memory_gb": 24},
    )  # fmt: skip
    await registry.register(busy)
    await registry.register(WorkerCapabilities(worker_id="gpu-1", services=["render"]))
    for priority in (10, 90, 50):
        await api.http.post("/api/jobs", json=job_body(priority=priority), headers=alice.headers)
    await api.http.post("/api/jobs", json=job_body(service="render"), headers=alice.headers)
    claimed = await queue.claim(busy)
    assert claimed.claimed is not None

    workers = {
        w["id"]: w for w in (await api.http.get("/api/workers", headers=admin.headers)).json()
    }
    assert set(workers) == {"gpu-0", "gpu-1"}
    assert workers["gpu-0"]["state"] == "busy"
    assert workers["gpu-0"]["current_job"] == claimed.claimed.id
    assert workers["gpu-0"]["machine"] == "m1"
    assert workers["gpu-0"]["capabilities"]["hardware"]["gpu_memory_gb"] == 24
    assert workers["gpu-1"] | {"last_seen": None} == {
        "id": "gpu-1", "machine": None, "services": ["render"], "state": "idle",
        "current_job": None, "last_seen": None,
        "capabilities": workers["gpu-1"]["capabilities"],
    }  # fmt: skip

    state = (await api.http.get("/api/queue", headers=admin.headers)).json()
    assert state["queue"] == queue.settings.queue
    assert (state["workers_idle"], state["workers_busy"]) == (1, 1)
    depths = {s["service"]: s for s in state["services"]}
    assert depths["simulation"]["pending"] == 2
    assert depths["render"]["pending"] == 1
    assert depths["simulation"]["oldest_pending_age_s"] >= 0


async def test_fair_share_weights(api: Api, accounts: dict[str, Account], queue: Queue) -> None:
    alice, admin = accounts["alice"], accounts["admin"]
    put = await api.http.put("/api/fair-shares/acme", json={"weight": 3}, headers=admin.headers)
    assert put.status_code == 200, put.text
    assert await queue.redis.hget(queue.keys.fair_weights(), "acme") == b"3.0"
    listed = await api.http.get("/api/fair-shares", headers=admin.headers)
    assert listed.json() == [{"customer_id": "acme", "weight": 3.0}]
    refused = await api.http.put("/api/fair-shares/acme", json={"weight": 0}, headers=admin.headers)
    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "weight"
    forbidden = await api.http.put(
        "/api/fair-shares/acme", json={"weight": 9}, headers=alice.headers
    )
    assert forbidden.status_code == 403
    deleted = await api.http.delete("/api/fair-shares/acme", headers=admin.headers)
    assert deleted.status_code == 204
    assert await queue.redis.hlen(queue.keys.fair_weights()) == 0
