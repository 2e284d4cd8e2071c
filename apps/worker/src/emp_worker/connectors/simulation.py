"""The ``simulation`` connector: pretends to generate an image, step by step.

Payload fields, all optional:

- ``steps`` (int, 0-100000) and ``step_time`` (seconds per step): override the worker's defaults.
- ``fail_with`` (text): fail half-way with this message, e.g. ``"CUDA out of memory"``;
  ``fail_times`` (int): only while the attempt is at most this, so ``{"fail_with": "...",
  "fail_times": 2}`` fails twice and then succeeds. Without ``fail_times`` every attempt fails.
- ``seed`` (int): the seed reported in the result; derived from the job id when absent.

The result is ``{"steps", "seed", "attempt", "image"}`` where ``image`` is a small SVG as a
``data:`` URL, so a studio can show a preview. A job with LoRAs also gets ``"loras"``: each one's
name, hash, weight and the size of its local file (the connector "applies" a LoRA by reading its
file's size from the path the worker's cache gave it).
"""

from __future__ import annotations

import asyncio
import base64
import zlib
from dataclasses import dataclass
from typing import Any

from pydantic import JsonValue

from emp_core.jobs.job import Job
from emp_worker.connectors.base import Abort, JobContext

_MAX_STEPS = 100_000
_MAX_STEP_TIME = 3600.0


class SimulatedFailure(RuntimeError):
    """The failure a payload asked for; its message is the payload's ``fail_with``."""


def _number(payload: dict[str, Any], name: str, default: float, hi: float, *, integer: bool) -> Any:
    value = payload.get(name, default)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= hi
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "an integer" if integer else "a number"
        raise Abort(f"payload.{name} must be {kind} from 0 to {hi:g}, got {value!r}")
    return int(value) if integer else float(value)


def preview_svg(seed: int) -> str:
    """A 64x64 SVG whose colours follow the seed, as a ``data:`` URL."""
    hue = seed % 360
    radius = 10 + seed % 14
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">'
        '<defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1">'
        f'<stop offset="0" stop-color="hsl({hue},70%,55%)"/>'
        f'<stop offset="1" stop-color="hsl({(hue + 60) % 360},70%,30%)"/>'
        '</linearGradient></defs><rect width="64" height="64" fill="url(#g)"/>'
        f'<circle cx="32" cy="32" r="{radius}" fill="hsl({(hue + 180) % 360},80%,80%)" '
        'fill-opacity="0.85"/></svg>'
    )
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


@dataclass(frozen=True, slots=True)
class SimulationConnector:
    """Sleeps ``steps`` times ``step_time`` seconds, reporting progress after each step."""

    steps: int = 10
    step_time: float = 0.1
    service: str = "simulation"

    async def run(self, job: Job, ctx: JobContext) -> JsonValue:
        payload = job.payload
        steps = _number(payload, "steps", self.steps, _MAX_STEPS, integer=True)
        step_time = _number(payload, "step_time", self.step_time, _MAX_STEP_TIME, integer=False)
        failure = self._failure(payload, job.attempts)
        seed = payload.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            seed = zlib.crc32(job.id.encode())
        loras = self._loras(job, ctx)
        fail_at = (steps + 1) // 2
        for step in range(1, steps + 1):
            await asyncio.sleep(step_time)
            if failure is not None and step == fail_at:
                raise SimulatedFailure(failure)
            await ctx.progress(100 * step / steps, f"step {step} of {steps}")
        if failure is not None:  # no steps to fail half-way through
            raise SimulatedFailure(failure)
        result: dict[str, JsonValue] = {
            "steps": steps, "seed": seed, "attempt": job.attempts, "image": preview_svg(seed),
        }  # fmt: skip
        if loras:
            result["loras"] = loras
        return result

    @staticmethod
    def _loras(job: Job, ctx: JobContext) -> list[JsonValue]:
        out: list[JsonValue] = []
        for ref in job.loras:
            path = ctx.lora_paths.get(ref.sha256)
            if path is None or not path.is_file():
                raise Abort(f"LoRA {ref.name} was not fetched before the job ran")
            size = path.stat().st_size
            out.append(
                {"name": ref.name, "sha256": ref.sha256, "weight": ref.weight, "bytes": size}
            )
        return out

    @staticmethod
    def _failure(payload: dict[str, Any], attempt: int) -> str | None:
        """The message to fail this attempt with, or None."""
        message = payload.get("fail_with")
        if message is None:
            return None
        if not isinstance(message, str) or not message:
            raise Abort(f"payload.fail_with must be a non-empty text, got {message!r}")
        times = payload.get("fail_times")
        if times is None:
            return message
        if not isinstance(times, int) or isinstance(times, bool) or times < 0:
            raise Abort(f"payload.fail_times must be a whole number of at least 0, got {times!r}")
        return message if attempt <= times else None
