"""The tiny random-weight pipeline and LoRA files the diffusers tests run on, built once into
``.data/models`` (the folder ``make dev`` uses too) and kept between sessions."""

from __future__ import annotations

import os
from collections.abc import AsyncIterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CACHE = Path(os.environ.get("EMP_TEST_MODELS", ROOT / ".data" / "models"))


def require_gpu_stack() -> None:
    """Skip when torch and diffusers are not installed (``make gpu-stack``), except in CI, where
    their absence is a failure: the diffusers tests are part of ``make test``."""
    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("torch/diffusers not installed: run `make gpu-stack`")


def tiny_model() -> Path:
    from emp_worker.diffusion.tiny import build_tiny_pipeline

    return build_tiny_pipeline(CACHE / "tiny-sd15")


def tiny_lora(name: str = "tiny-lora.safetensors", seed: int = 1) -> Path:
    from emp_worker.diffusion.tiny import build_tiny_lora

    return build_tiny_lora(tiny_model(), CACHE / "loras" / name, seed=seed)


def mismatched_lora(tmp: Path) -> Path:
    """A LoRA file whose matrices have the wrong shape for the tiny model (made for another)."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_lora()))
    key = next(k for k in sorted(state) if "lora_A" in k or "lora.down" in k)
    tensor = state[key]
    import torch

    state[key] = torch.zeros(tensor.shape[0], tensor.shape[1] + 16)
    out = tmp / "other-model-lora.safetensors"
    save_file(state, str(out))
    return out


class MemoryBlobs:
    """A blob store in a dict (the part of ``emp_core.blobs``' interface outputs use)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    async def put(self, path: str, chunks: AsyncIterable[bytes], *, overwrite: bool = True) -> int:
        data = b"".join([c async for c in chunks])
        self.blobs[path] = data
        return len(data)

    async def delete(self, path: str) -> bool:
        return self.blobs.pop(path, None) is not None

    async def signed_url(self, path: str, *, ttl_s: int) -> str:
        return f"memory://{path}?ttl={ttl_s}"
