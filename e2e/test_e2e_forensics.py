"""Forensics and an operator action end to end (issue 17): a job fails twice on the running
workers, its forensics page shows both attempts with their workers and errors, an admin retries
it with a reason, and the action stands in the job's history."""

from __future__ import annotations

import uuid
from pathlib import Path

from e2e_helpers import Stack, shot, sign_in, submit_job
from playwright.sync_api import Page, expect


def test_forensics_page_and_a_retry(page: Page, stack: Stack, artifacts: Path) -> None:
    marker = f"sensor {uuid.uuid4().hex[:8]} overheated"
    sign_in(page, stack.people["admin"])
    job_id = submit_job(page, {"steps": 1, "fail_with": f"RuntimeError: {marker}"},
                        max_attempts="2")  # fmt: skip
    expect(page.get_by_test_id("job-status")).to_have_text("failed", timeout=30_000)
    page.get_by_test_id("forensics-link").click()
    page.wait_for_url(f"**/jobs/{job_id}/forensics")
    rows = page.get_by_test_id("attempt-row")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_have_attribute("data-outcome", "retrying")
    expect(rows.nth(1)).to_have_attribute("data-outcome", "failed")
    expect(rows.nth(0)).to_contain_text(marker)
    expect(rows.nth(0)).to_contain_text("e2e-sim-")
    shot(page, artifacts, "30-job-forensics")

    page.get_by_test_id("retry-reason").fill("the sensor was replaced")
    page.get_by_test_id("retry-job").click()
    expect(page.get_by_test_id("action-done")).to_be_visible()
    expect(page.get_by_test_id("audit-entry")).to_contain_text("the sensor was replaced")
    # The retried job fails again (the same payload), with a fresh budget: two more attempts.
    for _ in range(60):
        page.reload()
        if page.get_by_test_id("attempt-row").count() == 4:
            break
        page.wait_for_timeout(500)
    expect(page.get_by_test_id("attempt-row")).to_have_count(4)
    expect(page.locator(".timeline")).to_contain_text("operator action #")
    shot(page, artifacts, "31-job-retried-by-an-operator")
