"""Access to the API beyond the token itself (issue 12): single-use WebSocket tickets, limits on
bad tokens and on submits, security headers, and refused handshakes logged at INFO."""

from __future__ import annotations

import asyncio
import logging

import pytest
from api_helpers import Api, job_body, running_api
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from emp_core.settings import QueueSettings
from emp_web.testing import Account, create_account


async def test_a_ticket_opens_one_socket_once(api: Api, accounts: dict[str, Account]) -> None:
    alice = accounts["alice"]
    job = (await api.http.post("/api/jobs", json=job_body(), headers=alice.headers)).json()
    answer = await api.http.post("/api/ws-tickets", headers=alice.headers)
    assert answer.status_code == 200
    ticket = answer.json()["ticket"]
    assert answer.json()["expires_in"] > 0
    assert not ticket.startswith("emp_")  # not the token
    url = f"{api.ws}/ws/jobs/{job['id']}?ticket={ticket}"
    async with connect(url) as ws:
        assert "submitted" in str(await asyncio.wait_for(ws.recv(), 10))
    with pytest.raises(InvalidStatus) as refused:  # used: worth nothing now
        async with connect(url):
            pass
    assert refused.value.response.status_code == 401
    assert (await api.http.post("/api/ws-tickets")).status_code == 401  # needs a token


async def test_bad_tokens_are_limited_per_address(
    settings: QueueSettings, database_url: str
) -> None:
    user = await create_account(database_url, name="limited")
    async with running_api(settings, database_url, token_failure_limits="3/minute") as api:
        bad = {"Authorization": "Bearer emp_guess"}
        codes = [(await api.http.get("/api/jobs", headers=bad)).status_code for _ in range(5)]
        assert codes == [401, 401, 401, 429, 429]
        limited = await api.http.get("/api/jobs", headers=bad)
        assert limited.json()["error"]["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) > 0
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{api.ws}/ws/events?token=emp_guess"):
                pass
        assert refused.value.response.status_code == 429
        # A token this process already knows is not held up by others' failures.
        async with running_api(settings, database_url, auth_cache_seconds=60) as other:
            assert (await other.http.get("/api/jobs", headers=user.headers)).status_code == 200
            assert (await other.http.get("/api/jobs", headers=user.headers)).status_code == 200


async def test_submits_are_limited_per_user(settings: QueueSettings, database_url: str) -> None:
    user = await create_account(database_url, name="submitter")
    other = await create_account(database_url, name="submitter2")
    async with running_api(settings, database_url, submit_limits="2/minute") as api:
        codes = [
            (await api.http.post("/api/jobs", json=job_body(), headers=user.headers)).status_code
            for _ in range(3)
        ]
        assert codes == [201, 201, 429]
        ok = await api.http.post("/api/jobs", json=job_body(), headers=other.headers)
        assert ok.status_code == 201  # per user


async def test_security_headers_on_api_responses(api: Api, accounts: dict[str, Account]) -> None:
    response = await api.http.get("/api/jobs", headers=accounts["alice"].headers)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "strict-transport-security" not in response.headers
    error = await api.http.get("/api/jobs")
    assert error.headers["x-frame-options"] == "DENY"
    https = await api.http.get("/health", headers={"X-Forwarded-Proto": "https"})
    assert https.headers["strict-transport-security"].startswith("max-age=")


async def test_a_refused_handshake_logs_info_with_a_reason_and_no_error(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(InvalidStatus):
        async with connect(f"{api.ws}/ws/events", additional_headers={"Origin": "x"}):
            pass
    refusals = [r for r in caplog.records if "refused a socket" in r.getMessage()]
    assert refusals
    assert refusals[0].levelno == logging.INFO
    assert "needs a token" in refusals[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
