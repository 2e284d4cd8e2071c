"""Revocation reaches every process at once (issue 12, defects 4 and 8): an open job socket and
an admin ``/ws/events`` socket close with 1008 when their token is revoked, and a token cached by
another API process stops working without waiting for its cache to expire."""

from __future__ import annotations

import asyncio
import contextlib

from api_helpers import Api, job_body, running_api
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from emp_core.settings import QueueSettings
from emp_sql import Database, DatabaseSettings, TokenRepository
from emp_sql.revocations import Revocation, publish
from emp_web.testing import Account, create_account


async def _revoke(database_url: str, api: Api, account: Account) -> None:
    """What ``emp tokens revoke`` and the studio's account page do: SQL, then publish."""
    db = Database(DatabaseSettings(database_url=database_url))
    try:
        async with db.session() as session:
            assert await TokenRepository(session).revoke(account.token_id)
    finally:
        await db.dispose()
    services = api.services
    revocation = Revocation(token_ids=(account.token_id,), reason="the token was revoked")
    assert await publish(services.redis, services.queue.keys, revocation)


async def _closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Read until the server closes the socket; its close code and reason."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    return ws.close_code, ws.close_reason


async def test_revoking_a_token_closes_its_open_sockets(api: Api, database_url: str) -> None:
    user = await create_account(database_url, name="revoked")
    admin = await create_account(database_url, name="revoked-admin", admin=True)
    job = (await api.http.post("/api/jobs", json=job_body(), headers=user.headers)).json()
    url = f"{api.ws}/ws/jobs/{job['id']}"
    async with (
        connect(url, additional_headers=user.headers) as job_socket,
        connect(f"{api.ws}/ws/events", additional_headers=admin.headers) as admin_socket,
    ):
        await asyncio.wait_for(job_socket.recv(), 10)  # the replayed `submitted`
        await _revoke(database_url, api, user)
        assert await _closed_with(job_socket) == (1008, "the token was revoked")
        await _revoke(database_url, api, admin)
        assert (await _closed_with(admin_socket))[0] == 1008
    refused = await api.http.get("/api/jobs", headers=user.headers)
    assert refused.status_code == 401


async def test_another_process_drops_its_cached_token_at_once(
    settings: QueueSettings, database_url: str
) -> None:
    user = await create_account(database_url, name="cached")
    # Two API processes on one queue, each caching tokens for a minute.
    async with (
        running_api(settings, database_url, auth_cache_seconds=60) as first,
        running_api(settings, database_url, auth_cache_seconds=60) as second,
    ):
        assert (await second.http.get("/api/jobs", headers=user.headers)).status_code == 200
        await _revoke(database_url, first, user)
        for _ in range(200):  # the message crosses Redis; no clock is read, only answers
            answer = await second.http.get("/api/jobs", headers=user.headers)
            if answer.status_code == 401:
                break
            await asyncio.sleep(0.05)
        assert answer.status_code == 401
