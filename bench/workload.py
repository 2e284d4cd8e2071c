"""The jobs and workers the benchmark uses: a no-op service, and a mixed queue in which the claiming
worker can run only a small fraction of what is pending."""

from __future__ import annotations

import random
from typing import Any

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.jobs.job import JobSpec
from emp_core.queue.queue import Queue

NOOP_SERVICE = "noop"

# Five services, eight requirement variants each: 40 requirement classes.
MIXED_SERVICES = ("sdxl", "flux", "sd15", "upscale", "caption")
_VARIANTS: tuple[dict[str, Any], ...] = (
    {},
    {"gpu_memory_gb": 16},
    {"gpu_memory_gb": 24},
    {"gpu_memory_gb": 48, "models": ["big-model"]},
    {"gpu_memory_gb": 80},
    {"models": ["model-a"]},
    {"models": ["model-b"], "gpu_memory_gb": 24},
    {"capabilities": {"gpu.vendor": "amd"}, "exclude": {"models": ["model-a"]}},
)
_PRIORITIES = (25, 50, 50, 50, 75)
_CUSTOMERS = tuple(f"customer-{i:02d}" for i in range(50))


def noop_job() -> dict[str, Any]:
    return {"service": NOOP_SERVICE, "payload": {"steps": 0}}


def noop_worker(index: int = 0) -> WorkerCapabilities:
    return WorkerCapabilities(worker_id=f"bench-noop-{index}", services=[NOOP_SERVICE])


def mixed_worker() -> WorkerCapabilities:
    """Serves two of the five services with a 12 GB GPU and one model: it matches the variants
    ``{}`` of sdxl and flux and ``models: [model-a]`` of sdxl, 3 of the 40 classes."""
    return WorkerCapabilities(
        worker_id="bench-mixed",
        services=["sdxl", "flux"],
        hardware={"gpu_memory_gb": 12, "cpu_cores": 8, "ram_gb": 32},
        models={"sdxl": ["model-a"]},
        capabilities={"gpu.vendor": "nvidia"},
    )


def _job(rng: random.Random, service: str, variant: dict[str, Any]) -> dict[str, Any]:
    job: dict[str, Any] = {
        "service": service,
        "priority": rng.choice(_PRIORITIES),
        "payload": {"prompt": "a lighthouse at dusk", "seed": rng.randrange(1 << 31), "steps": 20},
        "requirements": variant,
    }
    if rng.random() < 0.25:
        job["customer_id"] = rng.choice(_CUSTOMERS)
    return job


def mixed_job(rng: random.Random) -> dict[str, Any]:
    """Any of the 40 classes, uniformly: about 7.5% of them are for ``mixed_worker``."""
    return _job(rng, rng.choice(MIXED_SERVICES), rng.choice(_VARIANTS))


_MATCHABLE = (("sdxl", _VARIANTS[0]), ("flux", _VARIANTS[0]), ("sdxl", _VARIANTS[5]))


def matchable_job(rng: random.Random) -> dict[str, Any]:
    """One of the three classes ``mixed_worker`` can run."""
    return _job(rng, *rng.choice(_MATCHABLE))


async def matchable_pending(queue: Queue) -> int:
    """How many pending jobs ``mixed_worker`` could claim (the sizes of its classes' sets)."""
    total = 0
    for service, variant in _MATCHABLE:
        class_id, _ = JobSpec.model_validate(
            {"service": service, "requirements": variant}
        ).requirement_class
        total += await queue.redis.zcard(queue.keys.pending(class_id))
    return total
