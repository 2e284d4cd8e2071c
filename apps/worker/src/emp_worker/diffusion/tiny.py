"""A tiny Stable Diffusion 1.5-architecture pipeline with random weights, built from configs.

No hub access: the text encoder, UNet, VAE and scheduler are made from small configs and the CLIP
tokenizer from a byte-level vocabulary written here, then saved as an ordinary diffusers folder
(``model_index.json`` and one folder per component) that the ``diffusers`` connector loads like
any checkpoint. The images are noise; the code path is the real one. Used by the tests, by
``make dev`` and by the benchmark.

``python -m emp_worker.diffusion.tiny DIR [--lora FILE]`` builds one (once: an existing folder is
kept) and optionally a small LoRA file for it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

# SD1.5's layout at a fraction of its width: 4 VAE blocks (so latents are 1/8 of the image, as in
# SD1.5), a 2-level UNet with cross-attention, a 2-layer CLIP text encoder.
_TEXT = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
         "num_hidden_layers": 2, "max_position_embeddings": 77, "projection_dim": 32}  # fmt: skip
_UNET = {
    "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
    "block_out_channels": (32, 64), "norm_num_groups": 8, "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
}  # fmt: skip
_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
    "block_out_channels": (8, 16, 16, 16), "norm_num_groups": 8, "sample_size": 64,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
}  # fmt: skip
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def _byte_chars() -> list[str]:
    """GPT-2/CLIP's byte-to-unicode table: 256 printable characters, one per byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tokenizer(folder: Path) -> int:
    """A CLIP tokenizer over single bytes (no merges); returns its vocabulary size."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({
            "tokenizer_class": "CLIPTokenizer", "model_max_length": 77,
            "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        })
    )  # fmt: skip
    return len(vocab)


def build_tiny_pipeline(folder: Path, *, seed: int = 0) -> Path:
    """Write the tiny pipeline to ``folder`` (built in a temporary folder, then renamed, so a
    half-written model is never loaded). An existing folder is kept as it is."""
    if (folder / "model_index.json").exists():
        return folder
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=folder.parent))
    try:
        torch.manual_seed(seed)
        vocab_size = write_tokenizer(tmp / "_tok")
        tokenizer = CLIPTokenizer.from_pretrained(str(tmp / "_tok"))
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                **_TEXT, vocab_size=vocab_size, bos_token_id=vocab_size - 2,
                eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
            )
        )  # fmt: skip
        unet = UNet2DConditionModel(**_UNET)
        vae = AutoencoderKL(**_VAE)
        scheduler = EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            num_train_timesteps=1000, steps_offset=1,
        )  # fmt: skip
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
            scheduler=scheduler, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )  # fmt: skip
        pipe.save_pretrained(str(tmp / "model"), safe_serialization=True)
        (tmp / "model").rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def build_tiny_lora(model: Path, out: Path, *, seed: int = 1, rank: int = 4,
                    scale: float = 1.0) -> Path:  # fmt: skip
    """A LoRA for the tiny pipeline's UNet with random (non-zero) weights, as the
    ``pytorch_lora_weights.safetensors`` file diffusers' trainers write."""
    if out.exists():
        return out
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(str(model / "unet"))
    unet.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS, init_lora_weights=False)
    )
    state: dict[str, Any] = get_peft_model_state_dict(unet)
    state = {k: v * scale for k, v in state.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".lora-", dir=out.parent))
    try:
        StableDiffusionPipeline.save_lora_weights(str(tmp), unet_lora_layers=state)
        written = tmp / "pytorch_lora_weights.safetensors"
        written.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("folder", type=Path, help="where to write the pipeline (kept if present)")
    parser.add_argument("--lora", type=Path, help="also write a small LoRA file here")
    args = parser.parse_args(argv)
    build_tiny_pipeline(args.folder)
    if args.lora:
        build_tiny_lora(args.folder, args.lora)
    print(args.folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
