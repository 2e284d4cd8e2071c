"""The diffusers connector on a real (tiny, random-weight) SD1.5-architecture pipeline on the CPU:
steps, progress, previews, seeds, LoRAs on and off, outputs, bad input."""

from __future__ import annotations

import asyncio
import io

import pytest
from diffusers_helpers import (
    MemoryBlobs,
    mismatched_lora,
    require_gpu_stack,
    tiny_lora,
    tiny_model,
)
from worker_helpers import make_job

from emp_core.jobs.requirements import Requirements
from emp_core.patterns.portable import starter_snapshot
from emp_worker.connectors.base import InvalidParameter, LocalLora, RecordingContext

require_gpu_stack()

from emp_worker.connectors.diffusers import DiffusersConnector  # noqa: E402
from emp_worker.diffusion.pipeline import LoraError  # noqa: E402

BASE = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 3, "seed": 7,
        "guidance": 5.0, "preview_every": 1}  # fmt: skip


@pytest.fixture(scope="module")
def connector_parts():
    return tiny_model(), tiny_lora()


@pytest.fixture
def blobs() -> MemoryBlobs:
    return MemoryBlobs()


def make_connector(model, blobs, loras=None) -> DiffusersConnector:
    async def resolve(job, ctx):
        return list(loras or [])

    return DiffusersConnector.from_folder(model, model_name="tiny", outputs=blobs, loras=resolve)


def pixels(blobs: MemoryBlobs, result) -> bytes:
    from PIL import Image

    image = Image.open(io.BytesIO(blobs.blobs[result["images"][0]["path"]]))
    return image.convert("RGB").tobytes()


async def test_a_job_reports_steps_and_previews_and_stores_its_image(connector_parts, blobs):
    model, _ = connector_parts
    connector = make_connector(model, blobs)
    ctx = RecordingContext()
    job = make_job(service="diffusers", payload={**BASE, "num_images": 2})

    result = await connector.run(job, ctx)

    messages = [m for _, m in ctx.reports]  # in order; a backlog is sent as its newest step
    assert messages == sorted(messages)
    assert set(messages) <= {"step 1 of 3", "step 2 of 3", "step 3 of 3"}
    assert ctx.reports[-1] == (100, "step 3 of 3")
    assert ctx.previews
    assert all(p.startswith("data:image/jpeg;base64,") for p in ctx.previews)
    assert all(len(p) <= 16 * 1024 for p in ctx.previews)
    assert (result["seed"], result["model"]) == (7, "tiny")
    images = result["images"]
    assert len(images) == 2
    for i, entry in enumerate(images):
        assert entry["path"] == f"outputs/anonymous/{job.id}/{i}.png"
        assert entry["content_type"] == "image/png"
        assert (entry["width"], entry["height"]) == (64, 64)
        data = blobs.blobs[entry["path"]]
        assert entry["size"] == len(data)
        assert data.startswith(b"\x89PNG")
        assert entry["url"].startswith("http://127.0.0.1:9/blobs/")


async def test_same_seed_same_image_and_a_lora_changes_it_then_leaves_no_trace(
    connector_parts, blobs
):
    model, lora = connector_parts
    plain = make_connector(model, blobs)
    with_lora = DiffusersConnector(
        plain.pipeline, model_name="tiny", outputs=blobs,
        loras=lambda job, ctx: _const([LocalLora(lora, 1.0, "tiny-lora")]),
    )  # fmt: skip
    ctx = RecordingContext()

    first = pixels(blobs, await plain.run(make_job(service="diffusers", payload=BASE), ctx))
    again = pixels(blobs, await plain.run(make_job(service="diffusers", payload=BASE), ctx))
    lora_result = await with_lora.run(make_job(service="diffusers", payload=BASE), ctx)
    styled = pixels(blobs, lora_result)
    after = pixels(blobs, await plain.run(make_job(service="diffusers", payload=BASE), ctx))
    other_seed = pixels(
        blobs, await plain.run(make_job(service="diffusers", payload={**BASE, "seed": 8}), ctx)
    )

    assert first == again  # reproducible
    assert styled != first  # the LoRA took effect
    assert lora_result["loras"] == [{"name": "tiny-lora", "weight": 1.0}]
    assert after == first  # and was unloaded: the next job starts clean
    assert other_seed != first
    assert not plain.pipeline.pipe.get_list_adapters() or not any(
        plain.pipeline.pipe.get_list_adapters().values()
    )


async def _const(value):
    return value


async def test_a_lora_that_does_not_fit_fails_not_retryable_and_the_next_job_is_clean(
    connector_parts, blobs, tmp_path
):
    model, _ = connector_parts
    plain = make_connector(model, blobs)
    bad = DiffusersConnector(
        plain.pipeline, model_name="tiny", outputs=blobs,
        loras=lambda job, ctx: _const([LocalLora(mismatched_lora(tmp_path), 0.8, "sdxl-style")]),
    )  # fmt: skip
    ctx = RecordingContext()
    reference = pixels(blobs, await plain.run(make_job(service="diffusers", payload=BASE), ctx))
    before = dict(blobs.blobs)

    with pytest.raises(LoraError) as err:
        await bad.run(make_job(service="diffusers", payload=BASE), ctx)

    message = str(err.value)
    assert message.startswith("LoRA sdxl-style could not be loaded")
    outcome = starter_snapshot().classify(message, connector="diffusers")
    assert (outcome.category, outcome.retryable) == ("invalid_input", False)
    assert blobs.blobs == before  # nothing written by the failed job
    after = pixels(blobs, await plain.run(make_job(service="diffusers", payload=BASE), ctx))
    assert after == reference


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({**BASE, "width": 256}, "width"),  # beyond this model's limit (2 x 64)
        ({**BASE, "height": 100}, "height"),  # not a multiple of 8 (skipped the submit check)
        ({**BASE, "scheduler": "nope"}, "scheduler"),
        ({"width": 64}, "prompt"),
    ],
)
async def test_bad_parameters_fail_naming_the_field_and_write_nothing(
    connector_parts, blobs, payload, field
):
    model, _ = connector_parts
    connector = make_connector(model, blobs)

    with pytest.raises(InvalidParameter) as err:
        await connector.run(make_job(service="diffusers", payload=payload), RecordingContext())

    assert err.value.field == field
    assert str(err.value).startswith(f"invalid parameter payload.{field}: ")
    outcome = starter_snapshot().classify(str(err.value), connector="diffusers")
    assert (outcome.category, outcome.retryable) == ("invalid_input", False)
    assert blobs.blobs == {}


async def test_a_job_for_another_model_is_refused(connector_parts, blobs):
    model, _ = connector_parts
    connector = make_connector(model, blobs)
    job = make_job(service="diffusers", payload=BASE).model_copy(
        update={"requirements": Requirements(models=["sdxl-base"])}
    )
    with pytest.raises(InvalidParameter, match=r"payload\.model: this worker holds 'tiny'"):
        await connector.run(job, RecordingContext())


async def test_every_scheduler_runs(connector_parts, blobs):
    from emp_core.jobs.payloads import SCHEDULERS

    model, _ = connector_parts
    connector = make_connector(model, blobs)
    for name in SCHEDULERS:
        payload = {**BASE, "scheduler": name, "steps": 2, "preview_every": 0}
        result = await connector.run(make_job(service="diffusers", payload=payload),
                                     RecordingContext())  # fmt: skip
        assert result["scheduler"] == name
    assert len(blobs.blobs) == len(SCHEDULERS)


async def test_cancelling_stops_the_pipeline_at_the_next_step_and_keeps_nothing(
    connector_parts, blobs
):
    model, lora = connector_parts
    connector = DiffusersConnector.from_folder(
        model, model_name="tiny", outputs=blobs,
        loras=lambda job, ctx: _const([LocalLora(lora, 1.0, "tiny-lora")]),
    )  # fmt: skip
    second_step = asyncio.Event()

    class Ctx(RecordingContext):
        async def progress(self, pct, message="", *, preview=None):
            await super().progress(pct, message, preview=preview)
            if message.startswith("step "):
                second_step.set()

    ctx = Ctx()
    task = asyncio.create_task(
        connector.run(make_job(service="diffusers", payload={**BASE, "steps": 150}), ctx)
    )
    await asyncio.wait_for(second_step.wait(), 120)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    steps = len(ctx.reports)
    assert steps < 150  # stopped long before the end
    assert blobs.blobs == {}
    # The thread has finished and unloaded the LoRA: the next job runs at once, clean.
    pipe = connector.pipeline.pipe
    assert not any(pipe.get_list_adapters().values()) if pipe.get_list_adapters() else True
    result = await connector.run(make_job(service="diffusers", payload=BASE), RecordingContext())
    assert len(result["images"]) == 1
