"""Small preview images from a pipeline's latents, without the VAE.

Decoding latents through the VAE every few steps would cost a noticeable share of a step; a
linear map from the 4 latent channels to RGB (the approximation ComfyUI and others use for live
previews) costs nothing and shows the composition forming. The result is a JPEG ``data:`` URL of
at most ``MAX_PREVIEW_BYTES``, small enough to ride in a progress event.
"""

from __future__ import annotations

import base64
import io
from typing import Any

# Latent channel -> RGB factors of the SD1.5 and SDXL VAEs (published approximations).
_SD15 = [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350],
         [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]]  # fmt: skip
_SDXL = [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068],
         [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]]  # fmt: skip
MAX_PREVIEW_BYTES = 16 * 1024
MAX_PREVIEW_SIDE = 128


def preview_data_url(latents: Any, *, sdxl: bool = False) -> str | None:
    """The first image of a batch of latents (N, 4, h, w) as a small JPEG ``data:`` URL, or None
    when the latents are not 4-channel or the image does not fit the size bound."""
    import torch
    from PIL import Image

    if latents.ndim != 4 or latents.shape[1] != 4:
        return None
    factors = torch.tensor(_SDXL if sdxl else _SD15, dtype=torch.float32)
    with torch.no_grad():
        lat = latents[0].detach().to("cpu", torch.float32)  # (4, h, w)
        rgb = torch.einsum("chw,cr->hwr", lat, factors)
        rgb = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(rgb, "RGB")
    h, w = rgb.shape[:2]
    scale = MAX_PREVIEW_SIDE / max(h, w)
    image = image.resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR
    )
    for quality in (75, 50, 30):
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=quality)
        data = buf.getvalue()
        url = "data:image/jpeg;base64," + base64.b64encode(data).decode()
        if len(url) <= MAX_PREVIEW_BYTES:
            return url
    return None
