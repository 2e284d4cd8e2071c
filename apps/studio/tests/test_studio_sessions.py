"""Sessions that end (issue 12, defect 5): an old cookie is refused after sign-out, a password
change, "sign out everywhere", an admin's reset and disabling the user, on pages and on sockets
already open; idle and absolute lifetimes; the account pages."""

from __future__ import annotations

import asyncio
import contextlib
import re

import httpx
import pytest
from studio_helpers import Studio, Visitor, job_form, running_studio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from emp_core.settings import QueueSettings
from emp_sql import Database, DatabaseSettings, TokenRepository
from emp_sql.tokens import hash_token
from emp_studio.app import SESSION_COOKIE
from emp_web.testing import Account, create_account


def _socket(studio: Studio, cookie: str, path: str = "/ws/dashboard") -> connect:
    return connect(  # type: ignore[arg-type]
        f"{studio.ws}{path}", additional_headers={"Cookie": cookie}, origin=studio.base
    )


async def _closed_with(ws: ClientConnection) -> int | None:
    """Read until the server closes the socket; its close code."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    return ws.close_code


async def _replay(studio: Studio, cookie: str, path: str = "/jobs") -> httpx.Response:
    """A request with nothing but a copied cookie, as an attacker holding it would send."""
    async with httpx.AsyncClient(base_url=studio.base) as other:
        return await other.get(path, headers={"Cookie": cookie})


async def _fresh(studio: Studio, database_url: str, name: str) -> tuple[Account, Visitor]:
    account = await create_account(database_url, name=name)
    visitor = studio.visitor()
    await visitor.sign_in(account)
    return account, visitor


async def test_sign_out_ends_the_session_for_a_copied_cookie_and_open_sockets(
    studio: Studio, database_url: str
) -> None:
    _, carol = await _fresh(studio, database_url, "carol")
    cookie = carol.cookie_header
    assert (await _replay(studio, cookie)).status_code == 200
    async with _socket(studio, cookie) as ws:
        await asyncio.wait_for(ws.recv(), 10)  # the dashboard's first render
        await carol.post("/signout")
        assert await _closed_with(ws) == 1008
    page = await _replay(studio, cookie)
    assert page.status_code == 303
    assert page.headers["location"].startswith("/signin")
    submit = await _replay(studio, cookie, "/jobs/new")
    assert submit.status_code == 303
    with pytest.raises(InvalidStatus):
        async with _socket(studio, cookie):
            pass
    await carol.aclose()


async def test_a_password_change_ends_every_other_session(
    studio: Studio, database_url: str
) -> None:
    account, here = await _fresh(studio, database_url, "dave")
    elsewhere = studio.visitor()
    await elsewhere.sign_in(account)
    async with _socket(studio, elsewhere.cookie_header) as ws:
        await asyncio.wait_for(ws.recv(), 10)
        await here.get("/account")
        changed = await here.post(
            "/account/password", {"current": account.password, "password": "a new passphrase"}
        )
        assert changed.status_code == 303, changed.text
        assert await _closed_with(ws) == 1008
    assert (await _replay(studio, elsewhere.cookie_header)).status_code == 303
    assert (await here.get("/jobs")).status_code == 200  # the one who changed it stays in
    await here.aclose()
    await elsewhere.aclose()


async def test_sign_out_everywhere_else_and_the_sessions_list(
    studio: Studio, database_url: str
) -> None:
    account, here = await _fresh(studio, database_url, "erin")
    elsewhere = studio.visitor()
    await elsewhere.sign_in(account)
    listing = await here.get("/account")
    assert len(re.findall('data-testid="session-row"', listing.text)) == 2
    assert 'data-testid="this-session"' in listing.text
    await here.post("/account/sessions/end-others")
    assert (await _replay(studio, elsewhere.cookie_header)).status_code == 303
    assert (await here.get("/jobs")).status_code == 200
    listing = await here.get("/account")
    assert len(re.findall('data-testid="session-row"', listing.text)) == 1
    await here.aclose()
    await elsewhere.aclose()


async def test_disabling_a_user_ends_sessions_sockets_tokens_and_sign_in(
    studio: Studio, database_url: str, admin: Visitor
) -> None:
    account, frank = await _fresh(studio, database_url, "frank")
    await frank.get("/jobs/new")
    job_id = (await frank.post("/jobs", job_form())).headers["location"].removeprefix("/jobs/")
    cookie = frank.cookie_header
    async with _socket(studio, cookie, f"/ws/jobs/{job_id}") as ws:
        await asyncio.wait_for(ws.recv(), 10)
        await admin.get("/admin/users")
        done = await admin.post(f"/admin/users/{account.user_id}/disable")
        assert done.status_code == 303
        assert await _closed_with(ws) == 1008
    assert (await _replay(studio, cookie)).status_code == 303
    again = studio.visitor()
    await again.get("/signin")
    refused = await again.post("/signin", {"email": account.email, "password": account.password})
    assert refused.status_code == 403
    assert "disabled" in refused.text
    db = Database(DatabaseSettings(database_url=database_url))
    try:
        async with db.session() as session:
            assert await TokenRepository(session).resolve(hash_token(account.token)) is None
    finally:
        await db.dispose()
    await admin.post(f"/admin/users/{account.user_id}/enable")
    await again.get("/signin")
    back = await again.post("/signin", {"email": account.email, "password": account.password})
    assert back.status_code == 303
    await again.aclose()
    await frank.aclose()


async def test_an_admin_password_reset_ends_the_users_sessions(
    studio: Studio, database_url: str, admin: Visitor
) -> None:
    account, gina = await _fresh(studio, database_url, "gina")
    await admin.get("/admin/users")
    short = await admin.post(f"/admin/users/{account.user_id}/password", {"password": "x"})
    assert short.status_code == 422
    await admin.get("/admin/users")
    reset = await admin.post(
        f"/admin/users/{account.user_id}/password", {"password": "given by the admin"}
    )
    assert reset.status_code == 303
    assert (await _replay(studio, gina.cookie_header)).status_code == 303
    await gina.aclose()


async def test_tokens_are_created_once_listed_and_revoked(
    studio: Studio, database_url: str
) -> None:
    _, hana = await _fresh(studio, database_url, "hana")
    await hana.get("/account")
    created = await hana.post("/account/tokens", {"name": "laptop"})
    secret = re.search(r'data-testid="new-token-value">([^<]+)<', created.text)
    assert secret
    assert secret.group(1).startswith("emp_")
    listing = await hana.get("/account")
    assert secret.group(1) not in listing.text  # shown once
    assert len(re.findall('data-testid="token-row"', listing.text)) == 2  # the test's and this
    db = Database(DatabaseSettings(database_url=database_url))
    try:
        async with db.session() as session:
            found = await TokenRepository(session).resolve(hash_token(secret.group(1)))
            assert found is not None
            token_id = found[0].id
        await hana.post(f"/account/tokens/{token_id}/revoke")
        async with db.session() as session:
            assert await TokenRepository(session).resolve(hash_token(secret.group(1))) is None
    finally:
        await db.dispose()
    await hana.aclose()


async def test_idle_sessions_end(settings: QueueSettings, database_url: str) -> None:
    async with running_studio(settings, database_url, session_idle_seconds=4) as studio:
        _, ivan = await _fresh(studio, database_url, "ivan")
        assert (await ivan.get("/jobs")).status_code == 200
        await asyncio.sleep(4.5)
        assert (await ivan.get("/jobs")).status_code == 303
        await ivan.aclose()


async def test_cookies_are_secure_outside_development_and_pages_are_not_cached(
    settings: QueueSettings, database_url: str
) -> None:
    async with (
        running_studio(settings, database_url, dev=False) as studio,
        httpx.AsyncClient(base_url=studio.base) as client,
    ):
        page = await client.get("/signin")
        assert "secure" in page.headers["set-cookie"].lower()
        assert page.headers["cache-control"] == "no-store"
        assert "strict-transport-security" not in page.headers
        client.cookies.clear()
        https = await client.get("/signin", headers={"X-Forwarded-Proto": "https"})
        assert https.headers["strict-transport-security"].startswith("max-age=")
    async with (
        running_studio(settings, database_url) as studio,  # dev: plain HTTP works
        httpx.AsyncClient(base_url=studio.base) as client,
    ):
        page = await client.get("/signin")
        assert "secure" not in page.headers["set-cookie"].lower()
        client.cookies.clear()
        https = await client.get("/signin", headers={"X-Forwarded-Proto": "https"})
        assert "secure" in https.headers["set-cookie"].lower()  # HTTPS: always Secure
        static = await client.get("/static/studio.css")
        assert static.headers.get("cache-control") != "no-store"
    assert SESSION_COOKIE in page.headers["set-cookie"]
