"""One diffusers pipeline, loaded once and kept warm, and one generation on it.

Everything here blocks (it is GPU or CPU work) and runs in the connector's single worker thread;
the connector keeps the event loop free. ``generate`` loads the job's LoRAs under adapter names,
sets their weights, runs the pipeline with a step callback, and unloads the LoRAs whatever
happens, so the next job starts from the clean model.

Failure messages are written for the error patterns (``emp_core/patterns/starter.yaml``):
``invalid parameter payload.FIELD: ...`` and ``LoRA NAME could not be loaded: ...`` are not
retryable; an out-of-memory error keeps torch's wording (``CUDA out of memory``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emp_core.jobs.payloads import DiffusersPayload
from emp_worker.connectors.base import InvalidParameter, LocalLora

logger = logging.getLogger(__name__)

# Scheduler names a job may ask for -> (diffusers class, extra config).
SCHEDULER_CLASSES: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "deis": ("DEISMultistepScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


class LoraError(ValueError):
    """A LoRA file that does not load into this model; not retryable (error patterns)."""


class Stopped(Exception):
    """Raised from the step callback when the job was cancelled: the pipeline stops there."""


@dataclass(frozen=True, slots=True)
class Step:
    """One finished denoising step: ``step`` of ``total``, and the latents after it."""

    step: int
    total: int
    latents: Any


@dataclass
class Timings:
    """Seconds spent in the last generation's phases (for the benchmark and the logs)."""

    lora_load: float = 0.0
    denoise: float = 0.0
    lora_unload: float = 0.0
    total: float = 0.0


@dataclass
class Generated:
    images: list[Any]  # PIL images
    seed: int
    timings: Timings = field(default_factory=Timings)


def pick_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


class Pipeline:
    """The warm pipeline of one model folder. Not thread-safe: one generation at a time."""

    def __init__(self, folder: Path, *, device: str = "auto", dtype: str = "auto",
                 max_side: int | None = None, cpu_threads: int = 1) -> None:  # fmt: skip
        self.folder = folder
        self.cpu_threads = cpu_threads
        self.device = device
        self.dtype_name = dtype
        self._max_side = max_side
        self._pipe: Any = None
        self._base_scheduler_config: Any = None
        self._lock = threading.Lock()
        self.load_seconds: float | None = None

    # --- loading ---------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    def load(self) -> None:
        """Load the model folder (local files only: no hub) onto the device, once."""
        if self._pipe is not None:
            return
        import torch
        from diffusers import DiffusionPipeline

        started = time.perf_counter()
        if not (self.folder / "model_index.json").is_file():
            raise FileNotFoundError(
                f"diffusers model folder {self.folder} not found (no model_index.json)"
            )
        self.device = pick_device(self.device)
        if self.device == "cpu" and self.cpu_threads:
            # On a shared CPU (CI, a laptop running the whole stack) torch's OpenMP team of one
            # thread per core spins against the other processes: 10x-50x slower steps were seen
            # on 2 cores. One thread per worker is steadier; a GPU worker is unaffected.
            torch.set_num_threads(self.cpu_threads)
        dtype = self.dtype_name
        if dtype == "auto":
            dtype = "float16" if self.device.startswith("cuda") else "float32"
        pipe = DiffusionPipeline.from_pretrained(
            str(self.folder), dtype=getattr(torch, dtype), local_files_only=True
        )
        pipe.set_progress_bar_config(disable=True)
        if getattr(pipe, "safety_checker", None) is not None:
            pipe.safety_checker = None  # moderation is the platform's, not a random-weight CLIP's
        self._pipe = pipe.to(self.device)
        self._base_scheduler_config = pipe.scheduler.config
        self.load_seconds = time.perf_counter() - started
        logger.info(
            "loaded %s (%s) on %s as %s in %.1f s; sizes up to %d px",
            self.folder, type(pipe).__name__, self.device, dtype, self.load_seconds, self.max_side,
        )  # fmt: skip

    @property
    def pipe(self) -> Any:
        if self._pipe is None:
            raise RuntimeError("the pipeline is not loaded")
        return self._pipe

    @property
    def is_sdxl(self) -> bool:
        return "XL" in type(self.pipe).__name__

    @property
    def native_side(self) -> int:
        """The side the model was trained at: the UNet's sample size times the VAE's factor."""
        pipe = self.pipe
        return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)

    @property
    def max_side(self) -> int:
        return self._max_side or 2 * self.native_side

    # --- one generation --------------------------------------------------------------------------
    def check(self, p: DiffusersPayload) -> None:
        """What only this model can tell: sizes within its limits."""
        factor = int(self.pipe.vae_scale_factor)
        for name in ("width", "height"):
            value = getattr(p, name)
            if value > self.max_side:
                raise InvalidParameter(
                    name, f"{value} is larger than this worker's model allows ({self.max_side})"
                )
            if value % factor:
                raise InvalidParameter(name, f"{value} is not a multiple of {factor}")

    def generate(
        self,
        p: DiffusersPayload,
        *,
        seed: int,
        loras: list[LocalLora],
        on_step: Callable[[Step], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Generated:
        """Run one job; blocks. ``on_step`` is called after every step (in this thread);
        ``should_stop`` is asked after every step, and True stops the run with ``Stopped``."""
        with self._lock:
            return self._generate(p, seed, loras, on_step, should_stop)

    def _generate(
        self,
        p: DiffusersPayload,
        seed: int,
        loras: list[LocalLora],
        on_step: Callable[[Step], None] | None,
        should_stop: Callable[[], bool],
    ) -> Generated:
        import torch

        pipe = self.pipe
        self.check(p)
        t = Timings()
        started = time.perf_counter()
        pipe.scheduler = self._scheduler(p.scheduler)
        adapters = self._load_loras(loras)
        t.lora_load = time.perf_counter() - started
        try:
            total = p.steps

            def callback(_pipe: Any, i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
                if on_step is not None:
                    on_step(Step(i + 1, total, kwargs.get("latents")))
                if should_stop():
                    raise Stopped(f"stopped after step {i + 1} of {total}")
                return kwargs

            generator = torch.Generator(device="cpu").manual_seed(seed)
            denoise_started = time.perf_counter()
            try:
                out = pipe(
                    prompt=p.prompt,
                    negative_prompt=p.negative_prompt or None,
                    width=p.width,
                    height=p.height,
                    num_inference_steps=p.steps,
                    guidance_scale=p.guidance,
                    num_images_per_prompt=p.num_images,
                    generator=generator,
                    callback_on_step_end=callback,
                    callback_on_step_end_tensor_inputs=["latents"],
                    output_type="pil",
                )
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                raise
            t.denoise = time.perf_counter() - denoise_started
        finally:
            unload_started = time.perf_counter()
            if adapters:
                pipe.unload_lora_weights()
            t.lora_unload = time.perf_counter() - unload_started
        t.total = time.perf_counter() - started
        return Generated(images=list(out.images), seed=seed, timings=t)

    def _scheduler(self, name: str) -> Any:
        import diffusers

        cls_name, extra = SCHEDULER_CLASSES[name]
        cls = getattr(diffusers, cls_name)
        return cls.from_config(self._base_scheduler_config, **extra)

    def _load_loras(self, loras: list[LocalLora]) -> list[str]:
        """Load each LoRA under its own adapter name and set the job's weights; on any failure
        unload what was loaded and raise ``LoraError`` naming the LoRA."""
        if not loras:
            return []
        pipe = self.pipe
        names: list[str] = []
        try:
            for i, lora in enumerate(loras):
                label = lora.name or lora.path.name
                adapter = f"job_lora_{i}"
                try:
                    pipe.load_lora_weights(str(lora.path), adapter_name=adapter)
                except Exception as exc:
                    raise LoraError(
                        f"LoRA {label} could not be loaded: it does not fit this model "
                        f"({type(exc).__name__}: {str(exc)[:300]})"
                    ) from exc
                names.append(adapter)
            pipe.set_adapters(names, adapter_weights=[lora.weight for lora in loras])
        except BaseException:
            with contextlib.suppress(Exception):  # a half-loaded adapter goes too
                pipe.unload_lora_weights()
            raise
        return names
