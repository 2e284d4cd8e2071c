"""The Generate page: a diffusers job from a form, errors next to their fields, the gallery."""

from __future__ import annotations

from typing import Any

import pytest
from studio_helpers import Visitor

from emp_core.queue.queue import Queue


def generate_form(**overrides: Any) -> dict[str, Any]:
    form = {"prompt": "a lighthouse at dusk", "negative_prompt": "", "model": "tiny",
            "width": "64", "height": "64", "steps": "4", "guidance": "5", "seed": "",
            "random_seed": "on", "scheduler": "euler", "num_images": "1"}  # fmt: skip
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


async def test_generate_submits_a_diffusers_job_and_opens_its_page(
    alice: Visitor, queue: Queue, accounts: dict
) -> None:
    page = await alice.get("/generate")
    assert page.status_code == 200
    assert 'data-testid="generate-form"' in page.text
    assert 'data-testid="gallery-empty"' in page.text

    response = await alice.post("/generate", generate_form(seed="42", random_seed=None))
    assert response.status_code == 303, response.text
    job = await queue.get(response.headers["location"].removeprefix("/jobs/"))
    assert job.service == "diffusers"
    assert job.customer_id == accounts["alice"].user_id
    assert job.requirements.models == ["tiny"]
    assert job.payload == {"prompt": "a lighthouse at dusk", "width": 64, "height": 64,
                           "steps": 4, "guidance": 5.0, "scheduler": "euler", "num_images": 1,
                           "seed": 42}  # fmt: skip


async def test_a_random_seed_is_chosen_and_kept(alice: Visitor, queue: Queue) -> None:
    await alice.get("/generate")
    response = await alice.post("/generate", generate_form())
    job = await queue.get(response.headers["location"].removeprefix("/jobs/"))
    assert isinstance(job.payload["seed"], int)


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        ({"width": "100"}, "width", "multiple of 8"),
        ({"height": "4096"}, "height", "less than or equal to 2048"),
        ({"steps": "lots"}, "steps", "number"),
        ({"prompt": ""}, "prompt", "at least 1 character"),
        ({"scheduler": "magic"}, "scheduler", "euler"),
        ({"random_seed": None, "seed": ""}, "seed", "tick random"),
    ],
)
async def test_bad_fields_come_back_next_to_their_input(
    alice: Visitor, queue: Queue, overrides, field, text
) -> None:
    await alice.get("/generate")
    response = await alice.post("/generate", generate_form(**overrides))
    assert response.status_code == 422
    assert f'data-testid="error-{field}"' in response.text
    assert text in response.text
    assert await queue.depth() == {}


async def _finished_image_job(alice: Visitor, queue: Queue, store) -> str:
    """An image job submitted through the page and completed as a diffusers worker would:
    a PNG in the blob store, listed in the result."""
    from emp_web.testing import claim

    await alice.get("/generate")
    response = await alice.post("/generate", generate_form(model=""))
    job_id = response.headers["location"].removeprefix("/jobs/")
    claimed = await claim(queue, service="diffusers")
    assert claimed.id == job_id
    path = f"outputs/{claimed.job.customer_id}/{job_id}/0.png"

    async def one():
        yield b"\x89PNG\r\n\x1a\n fake image"

    await store.put(path, one())
    image = {"path": path, "content_type": "image/png", "size": 20, "width": 64, "height": 64,
             "url": "http://127.0.0.1:9/blobs/expired"}  # fmt: skip
    await queue.complete(claimed, {"images": [image], "seed": 1})
    return job_id


async def test_finished_images_are_served_by_the_studio_to_their_owner_only(
    alice: Visitor, bob: Visitor, queue: Queue, studio
) -> None:
    job_id = await _finished_image_job(alice, queue, studio.app.state.services.backends.blobs)

    page = await alice.get(f"/jobs/{job_id}")
    assert f'src="/jobs/{job_id}/outputs/0.png"' in page.text
    assert 'data-testid="result-download"' in page.text
    image = await alice.get(f"/jobs/{job_id}/outputs/0.png")
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")
    assert (await bob.get(f"/jobs/{job_id}/outputs/0.png")).status_code == 404
    assert (await alice.get(f"/jobs/{job_id}/outputs/7.png")).status_code == 404
    gallery = await alice.get("/generate")
    assert 'data-testid="gallery-item"' in gallery.text
    assert f'src="/jobs/{job_id}/outputs/0.png"' in gallery.text


async def test_generate_picks_loras_with_weights(
    alice: Visitor, bob: Visitor, studio, queue: Queue
) -> None:
    from test_studio_loras import lora_bytes, upload

    await alice.get("/loras")
    lora = (await upload(alice, lora_bytes(), "generate picker")).json()
    page = await alice.get("/generate")
    assert 'data-testid="lora-picker"' in page.text
    assert "generate picker" in page.text
    weight = {f"lora_weight_{lora['id']}": "0.6"}
    response = await alice.post("/generate", generate_form(lora=lora["id"], **weight))
    assert response.status_code == 303, response.text
    job = await queue.get(response.headers["location"].removeprefix("/jobs/"))
    (ref,) = job.loras
    assert (ref.id, ref.weight, ref.sha256) == (lora["id"], 0.6, lora["sha256"])

    await bob.get("/generate")
    theirs = await bob.post("/generate", generate_form(lora=lora["id"]))
    assert theirs.status_code == 422
    assert 'data-testid="error-loras"' in theirs.text
