"""Admins add users from the studio; refused input comes back next to its field."""

from __future__ import annotations

import re
import uuid

import pytest
from studio_helpers import Studio, Visitor

from emp_web.testing import Account


async def test_an_admin_adds_a_user_who_can_then_sign_in(admin: Visitor, studio: Studio) -> None:
    email = f"carol-{uuid.uuid4().hex[:6]}@example.com"
    await admin.get("/admin/users")
    response = await admin.post(
        "/admin/users", {"email": email, "password": "long enough pw", "role": "admin"}
    )
    assert response.status_code == 303
    page = (await admin.get(response.headers["location"])).text
    assert 'data-testid="user-created"' in page
    assert email in page
    carol = studio.visitor()
    try:
        await carol.sign_in(Account("", email, token="", token_id="", password="long enough pw"))
        assert (await carol.get("/admin/users")).status_code == 200  # made an admin
    finally:
        await carol.aclose()


@pytest.mark.parametrize(
    ("email", "password", "field", "text"),
    [
        ("not-an-email", "long enough pw", "email", "is not an email address"),
        ("dave@example.com", "short", "password", "at least 8 characters"),
        ("EXISTING", "long enough pw", "email", "exists"),
    ],
)
async def test_refused_input_stands_next_to_its_field(
    admin: Visitor,
    accounts: dict[str, Account],
    email: str,
    password: str,
    field: str,
    text: str,
) -> None:
    email = accounts["alice"].email if email == "EXISTING" else email
    await admin.get("/admin/users")
    response = await admin.post("/admin/users", {"email": email, "password": password})
    assert response.status_code == 422
    error = re.search(rf'data-testid="error-{field}">([^<]*)<', response.text)
    assert error
    assert text in error.group(1)
