"""The ``diffusers`` connector: a real diffusers pipeline inside the worker process.

The model is a local diffusers-format folder named by the worker's settings (``diffusers_model``),
advertised as the model capability of service ``diffusers`` (so the claim only hands this worker
jobs for it), loaded on first use and kept warm. Per job (``emp_core.jobs.payloads``):
prompt, negative prompt, width, height, steps, guidance, seed, scheduler, number of images,
and the job's LoRAs as local files from the worker's LoRA cache.

The blocking pipeline call runs in one worker thread, so the event loop stays free: the lease
keeps renewing and a cancel still arrives. Each step's callback hands the loop a progress report
("step 12 of 30") and every ``preview_every`` steps a small JPEG preview; a cancel sets a flag the
callback reads, so the pipeline stops at the next step. Images go to the blob store (``Outputs``);
a job that fails or is cancelled leaves none.
"""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from emp_core.errors import InvalidInput
from emp_core.jobs.job import Job
from emp_core.jobs.payloads import DiffusersPayload, parse_diffusers
from emp_worker.config import WorkerSettings
from emp_worker.connectors.base import (
    InvalidParameter,
    JobContext,
    LocalLora,
    LoraResolver,
    cached_loras,
)
from emp_worker.diffusion.pipeline import Generated, Pipeline, Step, Stopped
from emp_worker.outputs import BlobStoreOnDemand, BlobWriter, Outputs

logger = logging.getLogger(__name__)


@dataclass
class _Report:
    step: int
    total: int
    preview: str | None


class DiffusersConnector:
    """Runs ``diffusers`` jobs on one warm pipeline, one job at a time."""

    service = "diffusers"

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        model_name: str,
        outputs: BlobWriter,
        loras: LoraResolver = cached_loras,
        warm: bool = True,
    ) -> None:
        self.pipeline = pipeline
        self.warm_at_start = warm
        self.model_name = model_name
        self.store = outputs
        self.resolve_loras = loras
        # One thread: the pipeline is not thread-safe, and its state (adapters) is per job.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffusers")
        self._lock = asyncio.Lock()

    @classmethod
    def from_folder(
        cls, folder: Path, *, model_name: str | None = None, outputs: BlobWriter,
        device: str = "auto", dtype: str = "auto", max_side: int | None = None,
        loras: LoraResolver = cached_loras, warm: bool = True, cpu_threads: int = 1,
    ) -> DiffusersConnector:  # fmt: skip
        pipeline = Pipeline(
            folder, device=device, dtype=dtype, max_side=max_side, cpu_threads=cpu_threads
        )
        return cls(
            pipeline, model_name=model_name or folder.name, outputs=outputs, loras=loras, warm=warm
        )

    async def start(self) -> None:
        """Called by the worker before its first claim: load the model unless told not to."""
        if self.warm_at_start:
            await self.warm()

    async def warm(self) -> None:
        """Load the model now (in the thread), rather than on the first job."""
        if not self.pipeline.loaded:
            await asyncio.get_running_loop().run_in_executor(self._executor, self.pipeline.load)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- one job ---------------------------------------------------------------------------------
    async def run(self, job: Job, ctx: JobContext) -> JsonValue:
        try:
            p = parse_diffusers(job.payload)
        except InvalidInput as exc:  # submitted before the check existed, or by hand
            field = (exc.field or "payload").removeprefix("payload.")
            raise InvalidParameter(field, exc.message.split(": ", 1)[-1]) from None
        wanted = [m for m in job.requirements.models if m != self.model_name]
        if wanted:
            raise InvalidParameter(
                "model", f"this worker holds {self.model_name!r}, not {', '.join(wanted)}"
            )
        seed = p.seed if p.seed is not None else secrets.randbelow(2**32)
        loras = await self.resolve_loras(job, ctx)
        async with self._lock:
            await self.warm()
            generated = await self._generate(p, seed, loras, ctx)
        outputs = Outputs(self.store, job)
        try:
            images = [await self._save(outputs, image) for image in generated.images]
        except BaseException:
            await asyncio.shield(outputs.discard())
            raise
        t = generated.timings
        return {
            "images": images,  # type: ignore[dict-item]
            "seed": seed,
            "model": self.model_name,
            "steps": p.steps,
            "scheduler": p.scheduler,
            "width": p.width,
            "height": p.height,
            "loras": [{"name": lo.name, "weight": lo.weight} for lo in loras],
            "timings": {
                "lora_load_s": round(t.lora_load, 4),
                "denoise_s": round(t.denoise, 4),
                "lora_unload_s": round(t.lora_unload, 4),
                "total_s": round(t.total, 4),
            },
        }

    async def _save(self, outputs: Outputs, image: Any) -> dict[str, JsonValue]:
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, _png, image)
        return await outputs.save(
            data, ext="png", content_type="image/png", width=image.width, height=image.height
        )

    async def _generate(
        self, p: DiffusersPayload, seed: int, loras: list[LocalLora], ctx: JobContext
    ) -> Generated:
        """Run the pipeline in the thread; report its steps from here; stop it on cancel."""
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        reports: asyncio.Queue[_Report | None] = asyncio.Queue()
        sdxl = self.pipeline.is_sdxl
        every = p.preview_every

        def on_step(step: Step) -> None:  # in the pipeline's thread
            preview = None
            if every and step.latents is not None and (step.step % every == 0):
                from emp_worker.diffusion.preview import preview_data_url

                try:
                    preview = preview_data_url(step.latents, sdxl=sdxl)
                except Exception:  # a preview is a nicety: never fail a job for one
                    logger.debug("preview failed", exc_info=True)
            loop.call_soon_threadsafe(reports.put_nowait, _Report(step.step, step.total, preview))

        future = loop.run_in_executor(
            self._executor,
            lambda: self.pipeline.generate(
                p, seed=seed, loras=loras, on_step=on_step, should_stop=stop.is_set
            ),
        )
        pump = asyncio.create_task(self._pump(reports, ctx))
        try:
            both: list[asyncio.Future[Any]] = [future, pump]
            done, _ = await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
            if pump in done:  # a progress report failed: the job was taken away
                stop.set()
                await _settle(future)
                pump.result()  # raises what the report raised
            generated = future.result()
            reports.put_nowait(None)  # the pump sends what is left, then ends
            await pump
        except BaseException:
            stop.set()
            await _settle(future)  # the thread ends at its next step; LoRAs are unloaded by then
            pump.cancel()
            raise
        return generated

    @staticmethod
    async def _pump(reports: asyncio.Queue[_Report | None], ctx: JobContext) -> None:
        """Send step reports in order; when several are waiting, only the newest (keeping the
        newest preview), so a slow Redis never holds the pipeline back. ``None`` ends it."""
        while True:
            report = await reports.get()
            if report is None:
                return
            preview, last = report.preview, False
            while not reports.empty():
                following = reports.get_nowait()
                if following is None:
                    last = True
                    break
                report = following
                preview = report.preview or preview
            await ctx.progress(
                100 * report.step / report.total, f"step {report.step} of {report.total}",
                preview=preview,
            )  # fmt: skip
            if last:
                return


async def _settle(future: asyncio.Future[Any]) -> None:
    """Wait for the pipeline's thread to finish, however often this task is cancelled meanwhile
    (the worker re-cancels a stopping job): the thread must be done before anything else runs."""
    while not future.done():
        try:
            await asyncio.wait({future})
        except asyncio.CancelledError:
            continue
    if not future.cancelled():
        future.exception()  # retrieved: Stopped is the expected ending


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


__all__ = ["DiffusersConnector", "Stopped", "connector_from_settings"]


def connector_from_settings(settings: WorkerSettings) -> DiffusersConnector:
    """The connector a worker's settings describe (``EMP_DIFFUSERS_MODEL`` and friends), writing
    outputs to the blob store of ``EMP_BLOB_*``."""
    if settings.diffusers_model is None:
        raise InvalidInput(
            "the diffusers connector needs a model folder: set diffusers_model "
            "(EMP_DIFFUSERS_MODEL) to a diffusers-format folder",
            field="diffusers_model",
        )
    return DiffusersConnector.from_folder(
        settings.diffusers_model,
        model_name=settings.diffusers_model_id,
        outputs=BlobStoreOnDemand(),
        device=settings.diffusers_device,
        dtype=settings.diffusers_dtype,
        max_side=settings.diffusers_max_side,
        warm=settings.diffusers_warm,
        cpu_threads=settings.diffusers_cpu_threads,
    )
