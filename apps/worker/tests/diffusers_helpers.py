"""The tiny random-weight pipeline and LoRA files the diffusers tests run on, built once into
``.data/models`` (the folder ``make dev`` uses too) and kept between sessions."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from emp_core.blobs.local import LocalBlobStore

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


class MemoryBlobs(LocalBlobStore):
    """Core's local blob store in a temporary folder, with what the tests read back."""

    def __init__(self, root: Path | None = None) -> None:
        root = root or Path(tempfile.mkdtemp(prefix="emp-blobs-"))
        super().__init__(root, signing_key=b"k" * 32, public_url="http://127.0.0.1:9/blobs")

    @property
    def blobs(self) -> dict[str, bytes]:
        """Every blob stored, by path."""
        return {
            str(p.relative_to(self.root)): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            if p.is_file() and not p.relative_to(self.root).parts[0].startswith(".")
        }
