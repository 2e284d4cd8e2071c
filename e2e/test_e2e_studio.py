"""The studio in a real browser against the real apps: signing in, watching a job run live,
failures, cancelling, privacy between users, and form errors. One screenshot per flow lands in
e2e/artifacts/."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from e2e_helpers import Stack, shot, sign_in, submit_job
from playwright.sync_api import Page, expect

# Samples the job page's progress bar from inside the page, so the test sees what a person saw.
_WATCH_PROGRESS = """() => {
  window.__sameDocument = true;
  window.__progress = [];
  setInterval(() => {
    const bar = document.querySelector('[data-testid=job-progress]');
    if (bar) window.__progress.push(Number(bar.value));
  }, 50);
}"""


def test_sign_in_and_out(page: Page, stack: Stack, artifacts: Path) -> None:
    alice = stack.people["alice"]
    page.goto("/jobs")
    expect(page).to_have_url(re.compile(r"/signin\?next=/jobs$"))
    sign_in(page, alice)
    page.goto("/")
    expect(page.get_by_test_id("worker")).to_have_count(3)  # two simulation, one diffusers
    expect(page.get_by_test_id("live-status")).to_have_attribute("data-state", "live")
    shot(page, artifacts, "01-dashboard")
    page.get_by_test_id("sign-out").click()
    expect(page.get_by_test_id("signin-form")).to_be_visible()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/signin"))


def test_a_wrong_password_is_refused(page: Page, stack: Stack, artifacts: Path) -> None:
    page.goto("/signin")
    page.get_by_test_id("signin-email").fill(stack.people["alice"].email)
    page.get_by_test_id("signin-password").fill("not my password")
    page.get_by_test_id("signin-submit").click()
    expect(page.get_by_test_id("signin-error")).to_contain_text("do not match")
    expect(page.get_by_test_id("signed-in-as")).to_have_count(0)
    shot(page, artifacts, "02-wrong-password")


def test_watch_a_job_reach_100_percent_then_see_its_result(
    page: Page, stack: Stack, artifacts: Path
) -> None:
    sign_in(page, stack.people["alice"])
    job_id = submit_job(page, {"steps": 20, "step_time": 0.12}, priority="80")
    page.evaluate(_WATCH_PROGRESS)
    expect(page.get_by_test_id("job-status")).to_have_text("completed", timeout=20_000)
    expect(page.get_by_test_id("job-percent")).to_have_text("100%")
    expect(page.get_by_test_id("result-image")).to_be_visible()
    expect(page.get_by_test_id("result-table")).to_contain_text("seed")
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
    final = page.evaluate("Number(document.querySelector('[data-testid=job-progress]').value)")
    seen = [*page.evaluate("window.__progress"), final]
    assert len({v for v in seen if 0 < v < 100}) >= 3, f"no live progress seen: {seen}"
    assert seen == sorted(seen)
    assert final == 100
    expect(page.get_by_test_id("live-status")).to_have_attribute("data-state", "done")
    shot(page, artifacts, "03-job-completed")

    page.goto("/jobs")
    row = page.locator(f"[data-job-id='{job_id}']")
    expect(row).to_have_attribute("data-status", "completed")
    shot(page, artifacts, "04-my-jobs")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, artifacts, "05-my-jobs-phone")
    page.goto(f"/jobs/{job_id}")
    shot(page, artifacts, "06-job-phone")


def test_a_failing_job_shows_its_error_and_attempts(
    page: Page, stack: Stack, artifacts: Path
) -> None:
    sign_in(page, stack.people["alice"])
    # A message no starter pattern knows: the queue's own backoff (0.2 s here) paces the retry.
    # "CUDA out of memory" would wait out its pattern's 30 s delay.
    payload = {"steps": 4, "step_time": 0.05, "fail_with": "the e2e connector gave up"}
    submit_job(page, payload, max_attempts="2")
    expect(page.get_by_test_id("job-status")).to_have_text("failed", timeout=20_000)
    expect(page.get_by_test_id("job-error")).to_contain_text("the e2e connector gave up")
    expect(page.get_by_test_id("job-attempt")).to_have_count(2)
    expect(page.get_by_test_id("job-attempts-count")).to_have_text("2 of 2")
    expect(page.get_by_test_id("cancel-job")).to_have_count(0)
    shot(page, artifacts, "07-job-failed")


def test_cancel_a_running_job(page: Page, stack: Stack, artifacts: Path) -> None:
    sign_in(page, stack.people["alice"])
    submit_job(page, {"steps": 300, "step_time": 0.1})
    expect(page.get_by_test_id("job-status")).to_have_text("running", timeout=10_000)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("cancel-job").click()
    expect(page.get_by_test_id("job-status")).to_have_text("cancelled", timeout=10_000)
    expect(page.get_by_test_id("cancel-job")).to_have_count(0)
    expect(page.get_by_test_id("job-cancelled")).to_be_visible()
    shot(page, artifacts, "08-job-cancelled")


def test_a_user_cannot_open_another_users_job(page: Page, stack: Stack, artifacts: Path) -> None:
    bob = stack.people["bob"]
    # Bob submits through the HTTP API with his token; the studio shares its users and jobs.
    response = httpx.post(
        f"{stack.api}/api/jobs",
        json={"service": "simulation", "payload": {"steps": 2, "step_time": 0.01}},
        headers={"Authorization": f"Bearer {bob.token}"},
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    sign_in(page, stack.people["alice"])
    answer = page.goto(f"/jobs/{job_id}")
    assert answer is not None
    assert answer.status == 404
    expect(page.get_by_test_id("error-page")).to_have_attribute("data-status", "404")
    shot(page, artifacts, "09-other-users-job")


def test_a_bad_form_shows_the_fields_error(page: Page, stack: Stack, artifacts: Path) -> None:
    sign_in(page, stack.people["alice"])
    page.goto("/jobs/new")
    payload = page.get_by_test_id("field-payload")
    payload.fill('{"steps": 5,')
    expect(page.locator("[data-json-status=payload]")).to_contain_text("Not valid yet")
    page.get_by_test_id("field-priority").fill("5000")
    page.get_by_test_id("submit-job").click()
    expect(page.get_by_test_id("error-payload")).to_contain_text("not valid JSON")
    expect(payload).to_have_attribute("aria-invalid", "true")
    payload.fill('{"steps": 5}')
    page.get_by_test_id("submit-job").click()
    expect(page.get_by_test_id("error-priority")).to_contain_text("1000")
    expect(page.get_by_test_id("error-payload")).to_have_count(0)
    expect(page.get_by_test_id("field-priority")).to_have_value("5000")  # kept as typed
    expect(page).to_have_url(re.compile(r"/jobs/new$"))
    shot(page, artifacts, "10-form-errors")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, artifacts, "10-form-errors-phone")


def test_an_admin_watches_the_dashboard_and_adds_a_user(
    page: Page, stack: Stack, artifacts: Path
) -> None:
    admin = stack.people["admin"]
    sign_in(page, admin)
    page.goto("/")
    expect(page.get_by_test_id("stat-busy")).to_have_text("0")
    # The counts below are absolute: a job an earlier test left waiting would make them wrong.
    expect(page.get_by_test_id("stat-pending")).to_have_text("0")
    # Four jobs for two workers: the open dashboard shows both busy and two waiting, live. Each
    # job runs 20 s, longer than the waits below: with 3 s jobs the first pair could finish and
    # the next pair start between two (throttled) dashboard updates, so "2 waiting" was skipped.
    headers = {"Authorization": f"Bearer {admin.token}"}
    ids = []
    for _ in range(4):
        response = httpx.post(
            f"{stack.api}/api/jobs",
            json={"service": "simulation", "payload": {"steps": 200, "step_time": 0.1}},
            headers=headers,
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    expect(page.get_by_test_id("stat-busy")).to_have_text("2")
    expect(page.get_by_test_id("stat-pending")).to_have_text("2")
    expect(page.locator("[data-testid=worker][data-state=busy]")).to_have_count(2)
    expect(page.get_by_test_id("machines-empty")).to_be_visible()
    shot(page, artifacts, "11-admin-dashboard")
    for job_id in ids:  # the stack's workers are free again for whatever runs next
        httpx.post(f"{stack.api}/api/jobs/{job_id}/cancel", headers=headers)

    page.goto("/jobs")
    expect(page.get_by_test_id("jobs-table")).to_contain_text(stack.people["bob"].email)
    shot(page, artifacts, "12-admin-jobs")

    page.goto("/admin/users")
    # Other flows add accounts to the shared stack (the phone test's long address): count from
    # what is there.
    before = page.get_by_test_id("user-row").count()
    page.get_by_test_id("field-email").fill("carol@example.com")
    page.get_by_test_id("field-password").fill("carol's long password")
    page.get_by_test_id("create-user").click()
    expect(page.get_by_test_id("user-created")).to_contain_text("carol@example.com")
    expect(page.get_by_test_id("user-row")).to_have_count(before + 1)
    expect(page.get_by_test_id("user-row").filter(has_text="carol@example.com")).to_have_count(1)
    shot(page, artifacts, "13-users")
