"""Signing in and out, the session cookie, CSRF, and who may open what."""

from __future__ import annotations

import pytest
from studio_helpers import Studio, Visitor
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from emp_sql import Database, DatabaseSettings, UserRepository
from emp_studio.pages.auth import safe_next
from emp_web.testing import Account


async def test_health_and_sign_in_page_need_no_session(visitor: Visitor) -> None:
    health = await visitor.get("/health")
    assert health.status_code == 200
    assert health.json()["checks"] == {"redis": "ok", "sql": "ok"}
    page = await visitor.get("/signin")
    assert page.status_code == 200
    assert 'data-testid="signin-form"' in page.text


@pytest.mark.parametrize("path", ["/", "/jobs", "/jobs/new", "/jobs/abc", "/admin/users"])
async def test_pages_redirect_to_sign_in(visitor: Visitor, path: str) -> None:
    response = await visitor.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == f"/signin?next={path}"


async def test_htmx_requests_are_redirected_with_a_header(visitor: Visitor) -> None:
    response = await visitor.get("/jobs", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert response.headers["HX-Redirect"] == "/signin?next=/jobs"


async def test_sign_in_sets_a_safe_cookie_and_returns_to_the_page(
    visitor: Visitor, accounts: dict[str, Account]
) -> None:
    alice = accounts["alice"]
    await visitor.get("/signin?next=/jobs")
    response = await visitor.post(
        "/signin", {"email": alice.email.upper(), "password": alice.password, "next": "/jobs"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/jobs"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    page = await visitor.get("/jobs")
    assert page.status_code == 200
    assert alice.email in page.text


async def test_sign_in_never_redirects_off_site(
    visitor: Visitor, accounts: dict[str, Account]
) -> None:
    alice = accounts["alice"]
    await visitor.get("/signin")
    response = await visitor.post(
        "/signin",
        {"email": alice.email, "password": alice.password, "next": "//evil.example/x"},
    )
    assert response.headers["location"] == "/"


async def test_a_wrong_password_is_refused(visitor: Visitor, accounts: dict[str, Account]) -> None:
    await visitor.get("/signin")
    response = await visitor.post(
        "/signin", {"email": accounts["alice"].email, "password": "not the password"}
    )
    assert response.status_code == 401
    assert 'data-testid="signin-error"' in response.text
    assert (await visitor.get("/")).status_code == 303


async def test_sign_out_ends_the_session(alice: Visitor) -> None:
    assert (await alice.get("/")).status_code == 200
    response = await alice.post("/signout")
    assert response.status_code == 303
    assert response.headers["location"] == "/signin"
    assert (await alice.get("/")).status_code == 303


async def test_a_post_without_the_csrf_token_is_refused(alice: Visitor) -> None:
    missing = await alice.http.post("/jobs", data={"service": "simulation"})
    assert missing.status_code == 403
    assert "expired" in missing.text
    wrong = await alice.http.post("/jobs", data={"service": "simulation", "csrf_token": "nope"})
    assert wrong.status_code == 403
    # The sign-in form is protected too: no other site can sign a visitor in.
    assert (await alice.http.post("/signin", data={"email": "a@b.c"})).status_code == 403
    # htmx sends the token as a header.
    header = await alice.http.post(
        "/jobs",
        data={"service": "simulation", "payload": "{}"},
        headers={"X-CSRF-Token": alice.csrf, "HX-Request": "true"},
    )
    assert header.status_code == 200
    assert header.headers["HX-Redirect"].startswith("/jobs/")


async def test_admin_pages_are_forbidden_to_users(alice: Visitor, admin: Visitor) -> None:
    page = await alice.get("/admin/users")
    assert page.status_code == 403
    assert 'data-testid="error-page"' in page.text
    create = await alice.post("/admin/users", {"email": "x@example.com", "password": "x" * 12})
    assert create.status_code == 403
    assert (await admin.get("/admin/users")).status_code == 200


async def test_changing_the_password_signs_the_user_out(
    studio: Studio, database_url: str, accounts: dict[str, Account], bob: Visitor
) -> None:
    assert (await bob.get("/")).status_code == 200
    db = Database(DatabaseSettings(database_url=database_url))
    try:
        async with db.session() as session:
            users = UserRepository(session)
            user = await users.by_email(accounts["bob"].email)
            assert user is not None
            await users.set_password(user, accounts["bob"].password)  # same text, new hash
    finally:
        await db.dispose()
    assert (await bob.get("/")).status_code == 303


async def test_a_socket_without_a_session_is_refused(studio: Studio) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{studio.ws}/ws/dashboard"):
            pass
    assert refused.value.response.status_code == 403


async def test_a_cross_site_socket_is_refused(studio: Studio, alice: Visitor) -> None:
    headers = {"Cookie": alice.cookie_header}
    with pytest.raises(InvalidStatus):
        async with connect(
            f"{studio.ws}/ws/dashboard", additional_headers=headers, origin="http://evil.example"
        ):
            pass


@pytest.mark.parametrize(
    "target", ["", "//evil.example", "/\t/evil.example", "https://evil.example", "/\\evil"]
)
def test_unsafe_next_targets_go_home(target: str) -> None:
    assert safe_next(target) == "/"
    assert safe_next("/jobs?status=failed") == "/jobs?status=failed"
