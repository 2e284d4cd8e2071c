"""Rate limits (issue 12, defect 6): sign-in brute force locked out per account and per address
with a message saying how long, the real user in again after the window; submits per user.
Windows are configured short so that nothing sleeps long; no assertion reads a clock."""

from __future__ import annotations

import asyncio

from studio_helpers import Visitor, job_form, running_studio

from emp_core.settings import QueueSettings
from emp_web.testing import create_account


async def _attempt(visitor: Visitor, email: str, password: str) -> tuple[int, str]:
    await visitor.get("/signin")
    response = await visitor.post("/signin", {"email": email, "password": password})
    return response.status_code, response.text


async def test_brute_force_is_locked_out_and_the_user_gets_back_in_after_the_window(
    settings: QueueSettings, database_url: str
) -> None:
    account = await create_account(database_url, name="target")
    # A window long enough that a loaded machine still makes the attempts within it, short
    # enough to wait out; the wait polls (bounded) rather than trusting a sleep to be enough.
    options = {"signin_account_limits": "3/6 second", "signin_address_limits": "100/minute"}
    async with running_studio(settings, database_url, **options) as studio:
        attacker = studio.visitor()
        for _ in range(3):
            status, _ = await _attempt(attacker, account.email, "wrong password")
            assert status == 401
        # Past the limit even the right password is refused, with a clear message.
        status, text = await _attempt(attacker, account.email, account.password)
        assert status == 429
        assert "Too many failed sign-ins for this account" in text
        assert "try again in" in text
        owner = studio.visitor()  # another address or browser: the account is what is limited
        status, _ = await _attempt(owner, account.email, account.password)
        assert status == 429
        for _ in range(120):  # the window passes; refused attempts meanwhile do not count
            await asyncio.sleep(0.5)
            status, _ = await _attempt(owner, account.email, account.password)
            if status != 429:
                break
        assert status == 303
        await attacker.aclose()
        await owner.aclose()


async def test_one_address_guessing_many_accounts_is_limited(
    settings: QueueSettings, database_url: str
) -> None:
    options = {"signin_address_limits": "4/minute"}
    async with running_studio(settings, database_url, **options) as studio:
        attacker = studio.visitor()
        statuses = [
            (await _attempt(attacker, f"user{i}@example.com", "guess"))[0] for i in range(6)
        ]
        assert statuses == [401, 401, 401, 401, 429, 429]
        _, text = await _attempt(attacker, "user9@example.com", "guess")
        assert "from your address" in text
        await attacker.aclose()


async def test_submits_per_user_are_limited(settings: QueueSettings, database_url: str) -> None:
    account = await create_account(database_url, name="busy")
    async with running_studio(settings, database_url, submit_limits="2/minute") as studio:
        busy = studio.visitor()
        await busy.sign_in(account)
        await busy.get("/jobs/new")
        codes = [(await busy.post("/jobs", job_form())).status_code for _ in range(3)]
        assert codes == [303, 303, 429]
        await busy.aclose()
