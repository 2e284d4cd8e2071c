"""How a job's result (or payload) is shown: pictures as pictures, everything else as a table.

A result is whatever the connector returned. Any string in it that is an image (a ``data:image``
URL, or an http(s) URL ending in an image extension) becomes a preview; in the table it reads
"image, shown above" instead of a wall of base64. Long text is cut with a note.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Only raster formats and SVG that browsers render inside <img>, where an SVG's scripts never run.
_DATA_IMAGE = re.compile(r"^data:image/(png|jpeg|gif|webp|avif|svg\+xml);base64,[A-Za-z0-9+/=]+$")
_URL_IMAGE = re.compile(r"^https?://[^\s\"'<>]+\.(png|jpe?g|gif|webp|avif)(\?[^\s\"'<>]*)?$", re.I)
# A job's output as the studio serves it (pages/outputs.py): same origin, owner checked.
_OUTPUT_IMAGE = re.compile(r"^/jobs/[A-Za-z0-9_-]+/outputs/[0-9]+\.(png|jpe?g|gif|webp|avif)$")
MAX_TEXT = 2000
MAX_DEPTH = 6


@dataclass(frozen=True, slots=True)
class Image:
    label: str
    src: str


@dataclass(frozen=True, slots=True)
class ImageRef:
    """Where an image sat in the value: the table points at the preview."""

    index: int


@dataclass(frozen=True, slots=True)
class Clipped:
    """A long string, cut."""

    text: str
    more: int


@dataclass(slots=True)
class Presented:
    images: list[Image] = field(default_factory=list)
    value: Any = None

    @property
    def empty(self) -> bool:
        return not self.images and self.value in (None, {}, [], "")


def is_image(value: str) -> bool:
    return bool(_DATA_IMAGE.match(value) or _URL_IMAGE.match(value) or _OUTPUT_IMAGE.match(value))


def present(value: Any) -> Presented:
    """The value with its images lifted out (in the order met) and long text clipped."""
    shown = Presented()
    shown.value = _walk(value, "result", shown.images, 0)
    return shown


def _walk(value: Any, label: str, images: list[Image], depth: int) -> Any:
    if isinstance(value, str):
        if is_image(value):
            images.append(Image(label, value))
            return ImageRef(len(images))
        return Clipped(value[:MAX_TEXT], len(value) - MAX_TEXT) if len(value) > MAX_TEXT else value
    if depth >= MAX_DEPTH and isinstance(value, dict | list):
        return Clipped("…", 0)
    if isinstance(value, dict):
        return {k: _walk(v, str(k), images, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, f"{label} {i + 1}", images, depth + 1) for i, v in enumerate(value)]
    return value
