# ruff: noqa: ASYNC110
"""The comfyui connector against a protocol-faithful ComfyUI test server (comfy_server.py):
the happy path, LoRAs linked, validation errors, execution errors, interrupts, dropped sockets,
lagging history, binary previews, silence."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from comfy_server import FakeComfy, start
from diffusers_helpers import MemoryBlobs
from worker_helpers import make_job

from emp_core.patterns.portable import starter_snapshot
from emp_worker.connectors.base import InvalidParameter, LocalLora, RecordingContext
from emp_worker.connectors.comfyui import ComfyUIConnector, ComfyUIError


def graph(steps: int = 4, *, lora: str | None = None, extra: dict | None = None) -> dict:
    g = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1},
        },
        "3": {"class_type": "KSampler", "inputs": {"steps": steps, "seed": 1, "model": ["4", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "emp", "images": ["8", 0]}},
    }
    if lora:
        g["10"] = {"class_type": "LoraLoader", "inputs": {"lora_name": lora, "strength_model": 0.8}}
    g.update(extra or {})
    return g


@pytest.fixture
async def comfy(tmp_path: Path):
    fake, server, task = await start(tmp_path)
    try:
        yield fake
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def connector(fake: FakeComfy, blobs: MemoryBlobs, **kw) -> ComfyUIConnector:
    kw.setdefault("preview_every_s", 0)
    return ComfyUIConnector(fake.url, outputs=blobs, loras_dir=fake.loras_dir, **kw)


def job(g: dict):
    return make_job(service="comfyui", payload={"workflow": g})


async def test_a_workflow_runs_with_progress_previews_and_stored_outputs(comfy: FakeComfy):
    blobs = MemoryBlobs()
    ctx = RecordingContext()
    j = job(graph(steps=4))

    result = await connector(comfy, blobs).run(j, ctx)

    assert comfy.submitted_with_socket == [True]  # socket first, then POST /prompt
    assert comfy.prompts[0]["client_id"] == comfy.connects[0]
    messages = [m for _, m in ctx.reports]
    assert "node 3 (KSampler): step 2 of 4" in messages
    percents = [p for p, _ in ctx.reports]
    assert percents == sorted(percents)  # overall progress only grows
    assert percents[-1] == 100
    assert ctx.previews
    assert all(p.startswith("data:image/png;base64,") for p in ctx.previews)
    [image] = result["images"]
    assert image["path"].startswith(f"outputs/anonymous/{j.id}/0.png")
    assert (image["width"], image["height"], image["content_type"]) == (16, 24, "image/png")
    assert blobs.blobs[image["path"]].startswith(b"\x89PNG")


async def test_the_jobs_loras_are_linked_into_comfyuis_folder_and_removed_after(
    comfy: FakeComfy, tmp_path: Path
):
    lora_file = tmp_path / "cache" / "abc123.safetensors"
    lora_file.parent.mkdir()
    lora_file.write_bytes(b"lora bytes")

    async def resolve(j, ctx):
        return [LocalLora(lora_file, 0.8, "my-style.safetensors")]

    c = connector(comfy, MemoryBlobs(), loras=resolve)
    await c.run(job(graph(lora="emp/my-style.safetensors")), RecordingContext())

    assert comfy.lora_seen == [str(lora_file.resolve())]
    assert not (comfy.loras_dir / "emp" / "my-style.safetensors").exists()


async def test_a_validation_error_names_the_node_and_input_and_is_not_retried(comfy: FakeComfy):
    g = graph()
    g["4"]["inputs"]["ckpt_name"] = "missing.safetensors"
    blobs = MemoryBlobs()

    with pytest.raises(InvalidParameter) as err:
        await connector(comfy, blobs).run(job(g), RecordingContext())

    assert err.value.field == "workflow.4.ckpt_name"
    assert "Value not in list (CheckpointLoaderSimple)" in str(err.value)
    outcome = starter_snapshot().classify(str(err.value), connector="comfyui")
    assert (outcome.category, outcome.retryable) == ("invalid_input", False)
    assert blobs.blobs == {}


async def test_an_unknown_node_is_refused_as_node_missing(comfy: FakeComfy):
    with pytest.raises(InvalidParameter, match="Cannot execute because node FancyUpscaler"):
        await connector(comfy, MemoryBlobs()).run(
            job(graph(extra={"11": {"class_type": "FancyUpscaler", "inputs": {}}})),
            RecordingContext(),
        )


async def test_an_execution_error_goes_to_the_error_patterns(comfy: FakeComfy):
    g = graph(extra={"12": {"class_type": "Explode", "inputs": {
        "exception_type": "torch.OutOfMemoryError",
        "message": "CUDA out of memory. Tried to allocate 2.00 GiB"}}})  # fmt: skip
    blobs = MemoryBlobs()

    with pytest.raises(ComfyUIError) as err:
        await connector(comfy, blobs).run(job(g), RecordingContext())

    assert str(err.value).startswith("ComfyUI node 12 (Explode) failed: torch.OutOfMemoryError")
    outcome = starter_snapshot().classify(str(err.value), connector="comfyui")
    assert (outcome.category, outcome.retryable) == ("out_of_memory", True)
    assert blobs.blobs == {}  # nothing kept from a failed prompt


async def test_a_dropped_socket_reconnects_without_losing_the_prompt(comfy: FakeComfy):
    comfy.drop_socket_at_step = 2
    comfy.step_time = 0.02
    result = await connector(comfy, MemoryBlobs(), reconnect_s=0.01).run(
        job(graph(steps=10)), RecordingContext()
    )
    assert len(comfy.prompts) == 1  # submitted once
    assert len(comfy.connects) == 2  # and followed again with the same client id
    assert comfy.connects[0] == comfy.connects[1]
    assert len(result["images"]) == 1


async def test_a_prompt_that_finishes_while_disconnected_is_found_in_history(comfy: FakeComfy):
    comfy.drop_socket_at_step = 1
    comfy.step_time = 0.001

    class SlowReconnect(ComfyUIConnector):
        async def _reconnect(self, client_id):
            await asyncio.sleep(0.3)  # the prompt ends meanwhile: its messages are lost
            return await super()._reconnect(client_id)

    c = SlowReconnect(comfy.url, outputs=MemoryBlobs(), loras_dir=comfy.loras_dir)
    result = await c.run(job(graph(steps=3)), RecordingContext())
    assert len(result["images"]) == 1


async def test_lagging_history_is_waited_for(comfy: FakeComfy):
    comfy.history_lag_s = 0.4
    result = await connector(comfy, MemoryBlobs()).run(job(graph()), RecordingContext())
    assert len(result["images"]) == 1


async def test_cancel_interrupts_the_prompt(comfy: FakeComfy):
    comfy.step_time = 0.05
    blobs = MemoryBlobs()
    ctx = RecordingContext()
    task = asyncio.create_task(connector(comfy, blobs).run(job(graph(steps=500)), ctx))

    async def sampling() -> None:
        while not any("KSampler" in m for _, m in ctx.reports):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(sampling(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(comfy.interrupts) == 1
    for _ in range(200):
        if comfy.running is None:
            break
        await asyncio.sleep(0.01)
    assert comfy.running is None  # ComfyUI stopped the prompt
    assert blobs.blobs == {}


async def test_an_interrupt_by_someone_else_fails_the_attempt(comfy: FakeComfy):
    comfy.step_time = 0.05
    ctx = RecordingContext()
    c = connector(comfy, MemoryBlobs())
    task = asyncio.create_task(c.run(job(graph(steps=500)), ctx))
    while comfy.running is None:
        await asyncio.sleep(0.01)
    import httpx

    async with httpx.AsyncClient() as http:
        await http.post(f"{comfy.url}/interrupt")
    with pytest.raises(ComfyUIError, match="interrupted"):
        await task


async def test_silence_times_out_and_interrupts(comfy: FakeComfy):
    comfy.silent = True
    comfy.step_time = 0.05
    c = connector(comfy, MemoryBlobs(), idle_timeout_s=0.3)
    with pytest.raises(TimeoutError, match=r"no progress for 0\.3 s"):
        await c.run(job(graph(steps=500)), RecordingContext())
    assert comfy.interrupts


async def test_a_ui_format_workflow_is_refused_naming_the_field(comfy: FakeComfy):
    with pytest.raises(InvalidParameter, match=r"payload\.workflow: .*UI-format"):
        await connector(comfy, MemoryBlobs()).run(
            make_job(service="comfyui", payload={"workflow": {"nodes": [], "links": []}}),
            RecordingContext(),
        )
    assert comfy.prompts == []
