"""Error patterns end to end: an admin creates a pattern in the studio (testing it first), a
simulation job fails with a matching message, the job page shows the pattern's user message, the
job was not retried because the pattern says so, and the pattern's match count rose."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from e2e_helpers import Stack, shot, sign_in, submit_job
from playwright.sync_api import Page, expect


def test_admin_pattern_classifies_the_next_failure(
    page: Page, stack: Stack, artifacts: Path
) -> None:
    marker = f"render farm quota {uuid.uuid4().hex[:8]} exhausted"
    user_message = "Your monthly rendering quota is used up; it renews on the 1st."
    sign_in(page, stack.people["admin"])
    page.goto("/admin/patterns")
    page.get_by_test_id("new-pattern").click()
    page.get_by_test_id("field-name").fill("Quota exhausted")
    page.get_by_test_id("field-connector").select_option("simulation")
    page.get_by_test_id("field-pattern").fill("quota [0-9a-f]+ exhausted")
    page.get_by_test_id("field-match-kind").select_option("regex")
    page.get_by_test_id("field-category").select_option("invalid_input")
    page.get_by_test_id("field-retryable").uncheck()
    page.get_by_test_id("field-user-message").fill(user_message)
    page.get_by_test_id("test-message").fill(f"RuntimeError: {marker}")
    page.get_by_test_id("run-test").click()
    expect(page.get_by_test_id("pattern-test-result")).to_contain_text("This pattern matches.")
    page.get_by_test_id("save-pattern").click()
    expect(page.get_by_test_id("pattern-saved")).to_be_visible()
    pattern_url = page.url.split("?")[0]
    shot(page, artifacts, "20-pattern-saved")

    # Saved seconds ago; the running workers must use it without a restart.
    submit_job(page, {"steps": 1, "fail_with": f"RuntimeError: {marker}"}, max_attempts="3")
    expect(page.get_by_test_id("job-status")).to_have_text("failed", timeout=20_000)
    expect(page.get_by_test_id("job-user-message")).to_have_text(user_message)
    expect(page.get_by_test_id("job-failure")).to_contain_text("Failed after 1 attempt")
    shot(page, artifacts, "21-job-user-message")

    page.goto(pattern_url)
    # The API folds Redis counts into SQL every half second.
    for _ in range(40):
        if page.get_by_test_id("pattern-match-total").inner_text() == "1":
            break
        page.wait_for_timeout(250)
        page.reload()
    expect(page.get_by_test_id("pattern-match-total")).to_have_text("1")
    page.goto("/admin/patterns")
    row = page.get_by_test_id("pattern-row").filter(has_text="Quota exhausted")
    expect(row.get_by_test_id("pattern-matches")).to_have_text("1")
    assert re.search(r"/admin/patterns/[0-9a-f]{32}$", pattern_url)
