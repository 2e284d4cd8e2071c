"""The authorization matrix: user A, user B, admin and anonymous, over REST and WebSocket."""

from __future__ import annotations

import asyncio

import pytest
from api_helpers import Api, job_body
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from emp_sql import Database, DatabaseSettings, TokenRepository
from emp_web.testing import Account, create_account

PROTECTED = [
    ("POST", "/api/jobs"),
    ("GET", "/api/jobs"),
    ("GET", "/api/jobs/{id}"),
    ("POST", "/api/jobs/{id}/cancel"),
    ("GET", "/api/workers"),
    ("GET", "/api/queue"),
]


async def _refused(url: str, headers: dict[str, str] | None = None) -> int:
    """The HTTP status with which the server refused the WebSocket handshake."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, additional_headers=headers or {}):
            pass
    return refused.value.response.status_code


async def test_rest_matrix(api: Api, accounts: dict[str, Account]) -> None:
    alice, bob, admin = accounts["alice"], accounts["bob"], accounts["admin"]
    job = (await api.http.post("/api/jobs", json=job_body(), headers=alice.headers)).json()
    bad = {"Authorization": "Bearer emp_not-a-token"}
    for method, path in PROTECTED:
        url = path.format(id=job["id"])
        for headers in ({}, bad, {"Authorization": alice.token}):
            response = await api.http.request(method, url, headers=headers, json=job_body())
            assert response.status_code == 401, (method, url, headers)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert response.json()["error"]["code"] == "unauthorized"
    for path in ("/health", "/version"):
        assert (await api.http.get(path)).status_code == 200

    # Another user's job does not exist, as far as they can tell.
    for method, path in (("GET", "/api/jobs/{id}"), ("POST", "/api/jobs/{id}/cancel")):
        response = await api.http.request(method, path.format(id=job["id"]), headers=bob.headers)
        assert response.status_code == 404
        assert response.json()["error"]["message"] == f"job {job['id']} does not exist"
    assert (await api.http.get("/api/jobs", headers=bob.headers)).json()["jobs"] == []
    forbidden = await api.http.get(
        "/api/jobs", params={"customer_id": alice.user_id}, headers=bob.headers
    )
    assert forbidden.status_code == 403

    # An admin sees every job and every customer's list; users stay off admin routes.
    assert (await api.http.get(f"/api/jobs/{job['id']}", headers=admin.headers)).status_code == 200
    listed = await api.http.get(
        "/api/jobs", params={"customer_id": alice.user_id}, headers=admin.headers
    )
    assert [j["id"] for j in listed.json()["jobs"]] == [job["id"]]
    for path in ("/api/workers", "/api/queue"):
        assert (await api.http.get(path, headers=alice.headers)).status_code == 403
        assert (await api.http.get(path, headers=admin.headers)).status_code == 200
    cancelled = await api.http.post(f"/api/jobs/{job['id']}/cancel", headers=admin.headers)
    assert cancelled.json()["status"] == "cancelled"


async def test_websocket_matrix(api: Api, accounts: dict[str, Account]) -> None:
    alice, bob, admin = accounts["alice"], accounts["bob"], accounts["admin"]
    job = (await api.http.post("/api/jobs", json=job_body(), headers=alice.headers)).json()
    url = f"{api.ws}/ws/jobs/{job['id']}"
    assert await _refused(url) == 401
    assert await _refused(url, {"Authorization": "Bearer emp_wrong"}) == 401
    assert await _refused(f"{url}?token=emp_wrong") == 401
    assert await _refused(url, bob.headers) == 404
    assert await _refused(f"{api.ws}/ws/jobs/nope", alice.headers) == 404
    assert await _refused(f"{api.ws}/ws/events") == 401
    assert await _refused(f"{api.ws}/ws/events", alice.headers) == 403

    for target in (f"{url}?token={alice.token}", url):
        headers = {} if "token=" in target else admin.headers
        async with connect(target, additional_headers=headers) as socket:
            first = await asyncio.wait_for(socket.recv(), 5)
            assert '"submitted"' in first
    async with connect(f"{api.ws}/ws/events", additional_headers=admin.headers):
        pass


async def test_revoked_token_is_refused(api: Api, database_url: str) -> None:
    carol = await create_account(database_url, name="carol")
    assert (await api.http.get("/api/jobs", headers=carol.headers)).status_code == 200
    db = Database(DatabaseSettings(database_url=database_url))
    try:
        async with db.session() as session:
            assert await TokenRepository(session).revoke(carol.token_id)
            tokens = await TokenRepository(session).for_user(carol.user_id)
    finally:
        await db.dispose()
    assert tokens[0].last_used_at is not None
    # The test app caches nothing (auth_cache_seconds=0), so revocation applies at once.
    assert (await api.http.get("/api/jobs", headers=carol.headers)).status_code == 401
