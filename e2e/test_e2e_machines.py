"""An admin drains a real machine from the studio (issue 17): an ``emp-machine`` supervisor with
one simulation worker joins the stack, shows on the Machines page, and the Drain button stops it:
the supervisor answers, exits 0, reports itself stopped, and its worker leaves the dashboard.
Screenshots go to e2e/artifacts/ as 60-*.png."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import Stack, shot, sign_in
from playwright.sync_api import Page, expect

from emp_core.queue.keys import Keys
from emp_core.redis.client import connect
from emp_core.registry.machines import MachineRegistry

MACHINE = "e2e-m1"
# The supervisor reports twice a second; its worker starts in a few seconds on a quiet machine,
# tens on a loaded 2-core one.
START_TIMEOUT_MS = 90_000


async def _forget(redis_url: str, queue: str) -> None:
    client = connect(redis_url)
    try:
        await MachineRegistry(client, Keys(queue=queue)).remove(MACHINE)
    finally:
        await client.aclose()


@pytest.fixture
def machine(stack: Stack, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **stack.env,
        "EMP_MACHINE_ID": MACHINE,
        "EMP_WORKERS": "simulation:1",
        "EMP_STATUS_INTERVAL_SECONDS": "0.5",
    }
    with (tmp_path / "machine.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "emp_machine.main"], env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the supervisor and its worker
            process.wait()
        # The stack has no supervisor of its own: later tests expect an empty Machines list.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # Playwright holds this loop
            pool.submit(asyncio.run, _forget(stack.redis_url, stack.env["EMP_QUEUE"])).result()


def test_an_admin_drains_a_machine(
    page: Page, stack: Stack, machine: subprocess.Popen[bytes], artifacts: Path
) -> None:
    sign_in(page, stack.people["admin"])
    page.goto("/")
    workers_before = 3  # the stack's two simulation workers and its diffusers worker
    expect(page.get_by_test_id("worker")).to_have_count(
        workers_before + 1, timeout=START_TIMEOUT_MS
    )

    page.goto("/admin/machines")
    card = page.locator(f'[data-machine-id="{MACHINE}"]')
    expect(card.get_by_test_id("machine-state")).to_have_text("running")
    expect(card.get_by_test_id("machine-worker")).to_have_count(1)
    shot(page, artifacts, "60-machines-running")

    card.get_by_test_id("machine-link").click()
    expect(page.get_by_test_id("machine-state")).to_have_text("Running")
    page.get_by_test_id("drain-machine").click()
    result = page.get_by_test_id("control-result")
    expect(result).to_have_attribute("data-answered", "yes")
    expect(result).to_have_class("alert alert-ok")
    assert machine.wait(60) == 0, "a drained supervisor exits 0"

    page.goto(f"/admin/machines/{MACHINE}")  # not reload(): that would send the drain again
    expect(page.get_by_test_id("machine-state")).to_have_text("Stopped")
    expect(page.get_by_test_id("drain-machine")).to_have_count(0)  # nothing listens any more
    shot(page, artifacts, "61-machine-drained")
    page.goto("/")
    expect(page.get_by_test_id("worker")).to_have_count(workers_before)
