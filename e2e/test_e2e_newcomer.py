"""Issue 15's pages at phone width (390×844): the nav keeps every item on screen, the header
shows the whole signed-in email (wrapped, never cut, however long), an admin's "Everyone" shows
jobs without an owner, a waiting job says which requirement no live worker meets, the Machines
page lists a machine's workers, an unknown URL keeps the signed-in nav. Screenshots go to
e2e/artifacts/ as 50-*.png."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from e2e_helpers import PASSWORD, Person, Stack, shot, sign_in, submit_job
from playwright.sync_api import Page, expect

from emp_core.queue.queue import Queue
from emp_core.redis.client import connect
from emp_core.registry.machines import (
    MachineRegistry,
    MachineState,
    MachineStatus,
    MachineWorker,
    SlotState,
)
from emp_core.settings import QueueSettings
from emp_sql import Database, DatabaseSettings, Role, UserRepository

PHONE = {"width": 390, "height": 844}
LONG_EMAIL = "mary-ann.featherstonehaugh-cholmondeley@studio-example.com"


def _in_thread(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Playwright's sync API holds this thread's event loop: run Redis work on another."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _ownerless_job_and_a_machine(redis_url: str) -> str:
    client = connect(redis_url)
    try:
        queue = Queue(client, QueueSettings(redis_url=redis_url, queue="e2e"))
        job_id = await queue.submit({"service": "simulation", "payload": {"steps": 1}})
        now = datetime.now(UTC)
        workers = [
            MachineWorker(worker_id=f"phone-m1-simulation-{i}", service="simulation", index=i,
                          gpu=i, state=SlotState.RUNNING, pid=4200 + i, restarts=i,
                          started_at=now)
            for i in range(2)
        ]  # fmt: skip
        status = MachineStatus(
            machine_id="phone-m1", hostname="gpu-host-1", gpus=2, state=MachineState.RUNNING,
            workers=workers, started_at=now, last_seen=now,
        )  # fmt: skip
        await MachineRegistry(client, queue.keys).report(status)
        return job_id
    finally:
        await client.aclose()


async def _remove_machine(redis_url: str, machine_id: str) -> None:
    client = connect(redis_url)
    try:
        keys = Queue(client, QueueSettings(redis_url=redis_url, queue="e2e")).keys
        await MachineRegistry(client, keys).remove(machine_id)
    finally:
        await client.aclose()


def _fits_on_screen(page: Page, test_id: str) -> None:
    box = page.get_by_test_id(test_id).bounding_box()
    assert box is not None, test_id
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= PHONE["width"], f"{test_id} is cut off at the right"


def _shows_it_whole(page: Page, test_id: str) -> None:
    """On screen and not clipped: nothing of its text is hidden by an ellipsis or overflow."""
    _fits_on_screen(page, test_id)
    clipped = page.get_by_test_id(test_id).evaluate(
        "e => e.scrollWidth > e.clientWidth || e.scrollHeight > e.clientHeight"
    )
    assert not clipped, f"{test_id} is cut short"


async def _person_with_a_long_email(database_url: str) -> Person:
    db = Database(DatabaseSettings(database_url=database_url))
    try:
        async with db.session() as session:
            users = UserRepository(session)
            user = await users.by_email(LONG_EMAIL) or await users.create(
                LONG_EMAIL, PASSWORD, role=Role.USER
            )
            return Person(user.email, user.id, "")
    finally:
        await db.dispose()


def test_newcomer_pages_at_phone_width(page: Page, stack: Stack, artifacts: Path) -> None:
    page.set_viewport_size(PHONE)
    sign_in(page, stack.people["admin"])
    for item in ("nav-dashboard", "nav-jobs", "nav-machines", "nav-patterns"):
        _fits_on_screen(page, item)
    _shows_it_whole(page, "signed-in-as")
    shot(page, artifacts, "50-phone-dashboard")

    ownerless = _in_thread(_ownerless_job_and_a_machine(stack.redis_url))
    page.goto("/jobs")
    expect(page.locator(f'a[href="/jobs/{ownerless}"]').first).to_be_visible()
    shot(page, artifacts, "51-phone-jobs-everyone")

    submit_job(page, {"steps": 1}, need_gpu_memory_gb="999")
    expect(page.get_by_test_id("job-waiting")).to_be_visible()
    expect(page.get_by_test_id("job-waiting-unmet")).to_contain_text("gpu_memory_gb ≥ 999")
    shot(page, artifacts, "52-phone-job-waiting")
    # No worker will ever take it: cancel it, or it stays pending in the shared stack and every
    # later count of waiting jobs (the dashboard test's) is one too high.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("cancel-job").click()
    expect(page.get_by_test_id("job-status")).to_have_text("cancelled")

    page.get_by_test_id("nav-machines").click()
    card = page.locator('[data-machine-id="phone-m1"]')
    expect(card).to_be_visible()
    expect(card.get_by_test_id("machine-worker")).to_have_count(2)
    expect(card.get_by_test_id("machine-gpus")).to_have_text("2")
    shot(page, artifacts, "53-phone-machines")
    # The stack has no supervisor: later tests expect an empty Machines list.
    _in_thread(_remove_machine(stack.redis_url, "phone-m1"))

    page.goto("/admin/patterns")
    expect(page.get_by_test_id("patterns-filter")).to_be_visible()
    shot(page, artifacts, "54-phone-patterns")

    page.goto("/no/such/page")
    expect(page.get_by_test_id("signed-in-as")).to_have_text(stack.people["admin"].email)
    shot(page, artifacts, "55-phone-not-found")

    # A long address wraps in the header instead of being cut (the full text is on screen).
    page.get_by_test_id("sign-out").click()
    sign_in(page, _in_thread(_person_with_a_long_email(stack.env["EMP_DATABASE_URL"])))
    _shows_it_whole(page, "signed-in-as")
    for item in ("nav-dashboard", "nav-jobs"):
        _fits_on_screen(page, item)
    shot(page, artifacts, "56-phone-long-email")
