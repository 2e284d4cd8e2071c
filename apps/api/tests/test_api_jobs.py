"""REST: submit, read, list with cursor pagination, cancel, and bad input."""

from __future__ import annotations

from api_helpers import Api, job_body

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.queue import Queue
from emp_core.registry.workers import WorkerRegistry
from emp_web.testing import Account, claim


async def test_submit_get_and_cancel(api: Api, accounts: dict[str, Account], queue: Queue) -> None:
    alice = accounts["alice"]
    created = await api.http.post("/api/jobs", json=job_body(priority=70), headers=alice.headers)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["status"] == "pending"
    assert job["customer_id"] == alice.user_id
    assert job["priority"] == 70

    got = await api.http.get(f"/api/jobs/{job['id']}", headers=alice.headers)
    assert got.status_code == 200
    assert got.json()["id"] == job["id"]

    cancelled = await api.http.post(f"/api/jobs/{job['id']}/cancel", headers=alice.headers)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = await api.http.post(f"/api/jobs/{job['id']}/cancel", headers=alice.headers)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"
    assert await queue.depth() == {}


async def test_cancel_a_running_job(api: Api, accounts: dict[str, Account], queue: Queue) -> None:
    alice = accounts["alice"]
    job = (await api.http.post("/api/jobs", json=job_body(), headers=alice.headers)).json()
    claimed = await claim(queue)
    await queue.progress(claimed, 10)
    cancelled = await api.http.post(f"/api/jobs/{job['id']}/cancel", headers=alice.headers)
    assert cancelled.json()["status"] == "cancelled"


async def test_list_newest_first_with_cursor(
    api: Api, accounts: dict[str, Account], queue: Queue
) -> None:
    alice, bob = accounts["alice"], accounts["bob"]
    ids = []
    for n in range(5):
        body = job_body(payload={"n": n})
        ids.append(
            (await api.http.post("/api/jobs", json=body, headers=alice.headers)).json()["id"]
        )
    await api.http.post("/api/jobs", json=job_body(), headers=bob.headers)

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await api.http.get("/api/jobs", params=params, headers=alice.headers)).json()
        seen += [j["id"] for j in page["jobs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert pages == 3

    await api.http.post(f"/api/jobs/{ids[1]}/cancel", headers=alice.headers)
    only = await api.http.get("/api/jobs", params={"status": "cancelled"}, headers=alice.headers)
    assert [j["id"] for j in only.json()["jobs"]] == [ids[1]]
    other = await api.http.get("/api/jobs", params={"service": "other"}, headers=alice.headers)
    assert other.json() == {"jobs": [], "next_cursor": None}


async def test_bad_input_names_the_field(api: Api, accounts: dict[str, Account]) -> None:
    headers = accounts["alice"].headers
    cases = {
        "priority": job_body(priority="high"),
        "requirements.gpu_memory_gb": job_body(requirements={"gpu_memory_gb": -1}),
        "colour": job_body(colour="red"),
        "service": {"payload": {}},
    }
    for field, body in cases.items():
        response = await api.http.post("/api/jobs", json=body, headers=headers)
        assert response.status_code == 422, (field, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_input"
        assert error["field"] == field, error
    limit = await api.http.get("/api/jobs", params={"limit": 0}, headers=headers)
    assert (limit.status_code, limit.json()["error"]["field"]) == (422, "limit")
    missing = await api.http.get("/api/jobs/0123456789abcdef", headers=headers)
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "code": "not_found", "message": "job 0123456789abcdef does not exist", "field": "job_id",
    }  # fmt: skip
    unknown = await api.http.get("/api/nothing", headers=headers)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"


async def test_body_and_payload_limits(api: Api, accounts: dict[str, Account]) -> None:
    headers = accounts["alice"].headers
    limit = api.services.settings.max_body_bytes
    big = job_body(payload={"blob": "x" * (limit + 10)})
    response = await api.http.post("/api/jobs", json=big, headers=headers)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"

    async def chunks():  # no Content-Length: the limit still holds
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    chunked = await api.http.post(
        "/api/jobs", content=chunks(), headers=headers | {"Content-Type": "application/json"}
    )
    assert chunked.status_code == 413

    payload_limit = api.services.queue.settings.max_payload_bytes
    over = job_body(payload={"blob": "x" * payload_limit})
    response = await api.http.post("/api/jobs", json=over, headers=headers)
    assert response.status_code == 413
    assert response.json()["error"]["field"] == "payload"


async def test_admin_may_submit_for_a_customer(api: Api, accounts: dict[str, Account]) -> None:
    alice, admin = accounts["alice"], accounts["admin"]
    body = job_body(customer_id=alice.user_id)
    refused = await api.http.post("/api/jobs", json=body, headers=accounts["bob"].headers)
    assert (refused.status_code, refused.json()["error"]["field"]) == (422, "customer_id")
    job = (await api.http.post("/api/jobs", json=body, headers=admin.headers)).json()
    listed = (await api.http.get("/api/jobs", headers=alice.headers)).json()
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]


async def test_a_job_no_live_worker_serves_is_accepted_with_a_warning(
    api: Api, accounts: dict[str, Account], queue: Queue
) -> None:
    alice = accounts["alice"]
    unserved = await api.http.post("/api/jobs", json=job_body(), headers=alice.headers)
    assert unserved.status_code == 201, unserved.text
    (warning,) = unserved.json()["warnings"]
    assert "no worker has ever served 'simulation'" in warning

    registry = WorkerRegistry(queue.redis, queue.keys)
    await registry.register(WorkerCapabilities(worker_id="w-live", services=["simulation"]))
    served = await api.http.post("/api/jobs", json=job_body(), headers=alice.headers)
    assert served.json()["warnings"] == []
