"""Generating an image in a real browser: the Generate page, the job page's live steps and
preview, the finished image shown large with a download link, and the gallery."""

from __future__ import annotations

from pathlib import Path

from e2e_helpers import JOB_URL, Stack, shot, sign_in
from playwright.sync_api import Page, expect

# Notes from inside each page, from its first moment, whether a live preview image was shown.
_WATCH_PREVIEW = """(() => {
  window.__sawPreview = false;
  setInterval(() => {
    if (document.querySelector('[data-testid=job-preview]')) window.__sawPreview = true;
  }, 20);
})();"""


def test_generate_an_image_and_see_it(page: Page, stack: Stack, artifacts: Path) -> None:
    sign_in(page, stack.people["alice"])
    page.goto("/generate")
    expect(page.get_by_test_id("gallery-empty")).to_be_visible()
    page.get_by_test_id("field-prompt").fill("a lighthouse at dusk, oil painting")
    page.get_by_test_id("field-model").fill("tiny")
    page.get_by_test_id("field-width").fill("64")
    page.get_by_test_id("field-height").fill("64")
    page.get_by_test_id("field-steps").fill("80")
    shot(page, artifacts, "20-generate-form")
    page.add_init_script(_WATCH_PREVIEW)  # installed before the job page loads
    page.get_by_test_id("submit-generate").click()
    page.wait_for_url(JOB_URL)

    expect(page.get_by_test_id("job-status")).to_have_text("completed", timeout=240_000)
    image = page.get_by_test_id("result-image")
    expect(image).to_be_visible()
    # The image really loaded (from the blob store, through the studio), at its size.
    assert image.evaluate("img => img.complete && img.naturalWidth") == 64
    expect(page.get_by_test_id("result-download")).to_have_attribute("download", "")
    assert page.evaluate("window.__sawPreview") is True, "no live preview was shown"
    shot(page, artifacts, "21-generated-image")

    page.goto("/generate")
    item = page.get_by_test_id("gallery-item").first
    expect(item).to_be_visible()
    assert item.locator("img").evaluate("img => img.complete && img.naturalWidth") == 64
    shot(page, artifacts, "22-gallery")


def test_a_bad_size_is_refused_next_to_its_field(page: Page, stack: Stack) -> None:
    sign_in(page, stack.people["bob"])
    page.goto("/generate")
    page.get_by_test_id("field-prompt").fill("a cat")
    page.get_by_test_id("field-width").fill("100")
    page.get_by_test_id("submit-generate").click()
    expect(page.get_by_test_id("error-width")).to_contain_text("multiple of 8")
