"""LoRAs in a real browser: upload with the progress bar, size and hash in the list, pick one on
the New job form, delete with a confirmation; a bad file's error stays beside the form; a worker
downloads a job's LoRA once and the next job with it runs there without a download."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import redis
from e2e_helpers import JOB_URL, Stack, shot, sign_in
from playwright.sync_api import Page, expect

from conftest import QUEUE
from emp_core.loras.safetensors import encode
from emp_core.queue.keys import Keys

# Samples the upload's progress bar into sessionStorage, which outlives the reload that follows.
_WATCH_UPLOAD = """() => {
  sessionStorage.setItem('uploadProgress', '[]');
  setInterval(() => {
    const bar = document.querySelector('[data-testid=upload-progress]');
    if (!bar) return;
    const seen = JSON.parse(sessionStorage.getItem('uploadProgress') || '[]');
    seen.push(Number(bar.value));
    sessionStorage.setItem('uploadProgress', JSON.stringify(seen));
  }, 10);
}"""


def lora(mb: int) -> bytes:
    width = mb * 1024 * 1024 // (2 * 16 * 2)
    layers = {
        "lora_unet_a.lora_down.weight": ("F16", [16, width]),
        "lora_unet_a.lora_up.weight": ("F16", [width, 16]),
    }
    return encode(layers, {"tag": uuid.uuid4().hex})


def test_upload_pick_and_delete_a_lora(page: Page, stack: Stack, artifacts: Path) -> None:
    sign_in(page, stack.people["alice"])
    page.goto("/loras")
    data = lora(24)
    page.get_by_test_id("lora-name").fill("E2E watercolour")
    page.get_by_test_id("lora-file").set_input_files(
        {"name": "watercolour.safetensors", "mimeType": "application/octet-stream", "buffer": data}
    )
    page.evaluate(_WATCH_UPLOAD)
    page.get_by_test_id("upload-lora").click()
    expect(page.get_by_test_id("loras-notice")).to_contain_text("E2E watercolour", timeout=60_000)
    seen = page.evaluate("JSON.parse(sessionStorage.getItem('uploadProgress') || '[]')")
    assert max(seen, default=0) > 0, f"the progress bar never moved: {seen[:20]}"
    row = page.get_by_test_id("lora-row").filter(has=page.locator("input[value='E2E watercolour']"))
    expect(row).to_have_count(1)
    expect(row.get_by_test_id("lora-sha256")).to_have_attribute(
        "title", hashlib.sha256(data).hexdigest()
    )
    expect(row.get_by_test_id("lora-size")).to_have_attribute("title", f"{len(data)} bytes")
    shot(page, artifacts, "30-loras-uploaded")

    page.goto("/jobs/new")
    option = page.get_by_test_id("lora-picker").locator(".lora-option", has_text="E2E watercolour")
    option.get_by_test_id("pick-lora").check()
    option.get_by_test_id("lora-weight").fill("0.6")
    page.get_by_test_id("field-payload").fill('{"steps": 2}')
    page.get_by_test_id("submit-job").click()
    page.wait_for_url(JOB_URL)

    page.goto("/loras")
    row.get_by_test_id("lora-delete").click()
    expect(page.get_by_test_id("delete-confirm")).to_contain_text("E2E watercolour")
    page.get_by_test_id("confirm-delete").click()
    expect(page.get_by_test_id("loras-notice")).to_contain_text("Deleted")
    expect(row).to_have_count(0)


def test_a_bad_file_is_refused_beside_the_form(page: Page, stack: Stack, artifacts: Path) -> None:
    sign_in(page, stack.people["bob"])
    page.goto("/loras")
    page.get_by_test_id("lora-file").set_input_files(
        {"name": "notes.safetensors", "mimeType": "text/plain", "buffer": b"just some text" * 10}
    )
    page.get_by_test_id("upload-lora").click()
    expect(page.get_by_test_id("upload-error")).to_contain_text("not a safetensors file")
    shot(page, artifacts, "31-lora-refused")


def _downloads(stack: Stack, job_id: str) -> tuple[list[str], str]:
    """The job's "downloading …" progress messages, from its event stream, and its worker."""
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    try:
        keys = Keys(queue=QUEUE)
        entries = client.xrange(keys.events(job_id))
        worker = client.hget(keys.job(job_id), "worker_id") or ""
    finally:
        client.close()
    messages = [f.get("message", "") for _, f in entries if f.get("type") == "progress"]
    return [m for m in messages if m.startswith("downloading")], worker


def _run_with_lora(page: Page, name: str) -> str:
    page.goto("/jobs/new")
    option = page.get_by_test_id("lora-picker").locator(".lora-option", has_text=name)
    option.get_by_test_id("pick-lora").check()
    page.get_by_test_id("field-payload").fill('{"steps": 2, "step_time": 0.05}')
    page.get_by_test_id("submit-job").click()
    page.wait_for_url(JOB_URL)
    expect(page.get_by_test_id("job-status")).to_have_text("completed", timeout=30_000)
    return page.url.rsplit("/", 1)[1]


def test_a_worker_downloads_a_lora_once_and_keeps_it(
    page: Page, stack: Stack, artifacts: Path
) -> None:
    """ADR-010 end to end: upload in the studio, a job that uses it makes the worker download
    it (its progress says so), and the next job with it runs on the worker that holds it, with
    no download."""
    sign_in(page, stack.people["alice"])
    page.goto("/loras")
    name = f"E2E cached {uuid.uuid4().hex[:6]}"
    page.get_by_test_id("lora-name").fill(name)
    page.get_by_test_id("lora-file").set_input_files(
        {"name": "cached.safetensors", "mimeType": "application/octet-stream", "buffer": lora(2)}
    )
    page.get_by_test_id("upload-lora").click()
    expect(page.get_by_test_id("loras-notice")).to_contain_text(name, timeout=60_000)

    first = _run_with_lora(page, name)
    downloads, holder = _downloads(stack, first)
    assert downloads, "the first job's worker never reported downloading the LoRA"
    shot(page, artifacts, "32-lora-downloaded")

    second = _run_with_lora(page, name)
    downloads, worker = _downloads(stack, second)
    assert worker == holder, f"the second job ran on {worker}, not on {holder} that holds it"
    assert downloads == [], f"the LoRA was downloaded again: {downloads}"
