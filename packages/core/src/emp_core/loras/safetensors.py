"""Checking that a stream of bytes is a real safetensors LoRA, while it streams (ADR-010).

The format (https://github.com/huggingface/safetensors): 8 bytes little-endian ``N``, then ``N``
bytes of JSON header, then the data section. The header maps tensor names to ``{"dtype", "shape",
"data_offsets": [begin, end]}`` (offsets relative to the data section) plus an optional
``__metadata__`` object of strings. ``SafetensorsCheck`` is fed chunks as they arrive and refuses,
as early as it can, with a message that names the problem:

- the file is empty or ends before its 8-byte header length, or the header length is 0 or over
  ``max_header_bytes`` (16 MiB by default; real LoRA headers are tens of KiB): refused after the
  first 8 bytes;
- the header is not a JSON object, a tensor entry lacks a field, a dtype is unknown, a shape is not
  a list of non-negative integers, or ``end - begin`` differs from ``prod(shape) × dtype size``;
- offsets out of order, overlapping, or leaving a hole (the format indexes the whole data section);
- the file is longer or shorter than ``8 + N + data section`` (refused at the first byte too many,
  or at the end), or over ``max_bytes`` (2 GiB by default);
- **the LoRA rule**: at least one low-rank pair — a tensor whose name contains ``lora_down``,
  ``lora.down`` or ``lora_A`` and, under the same prefix, its partner with ``lora_up``,
  ``lora.up`` or ``lora_B`` (kohya, diffusers and PEFT naming). Other tensors (``alpha``,
  ``dora_scale``, …) may sit beside them. A checkpoint or a LyCORIS (LoHa/LoKr) file is refused.

The sha256 and the size are computed on the way. Nothing here does I/O: the caller owns the stream.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from emp_core.errors import InvalidInput, PayloadTooLarge

MAX_BYTES = 2 * 1024**3
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_RANK = 8
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
_DOWN = re.compile(r"lora_down|lora\.down|lora_A")
_PARTNER = {"lora_down": "lora_up", "lora.down": "lora.up", "lora_A": "lora_B"}


class InvalidSafetensors(InvalidInput):
    code = "invalid_safetensors"

    def __init__(self, message: str) -> None:
        super().__init__(message, field="file")


class FileTooLarge(PayloadTooLarge):
    code = "file_too_large"


@dataclass(frozen=True)
class SafetensorsInfo:
    size: int
    sha256: str
    header_bytes: int
    tensors: int
    metadata: dict[str, str] = field(default_factory=dict)


class SafetensorsCheck:
    """Feed it the file's chunks in order (``update``), then call ``finish``."""

    def __init__(
        self,
        *,
        max_bytes: int = MAX_BYTES,
        max_header_bytes: int = MAX_HEADER_BYTES,
        require_lora: bool = True,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_header_bytes = max_header_bytes
        self.require_lora = require_lora
        self.size = 0
        self._hash = hashlib.sha256()
        self._head = bytearray()  # the 8-byte length and the header, until parsed
        self._header_len: int | None = None
        self._expected: int | None = None  # 8 + N + data section, once the header is parsed
        self._tensors = 0
        self._metadata: dict[str, str] = {}

    def update(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise FileTooLarge(
                f"the file is over the limit of {self.max_bytes:,} bytes", field="file"
            )
        if self._expected is not None and self.size > self._expected:
            raise InvalidSafetensors(
                f"the file is longer than its header says: the header's tensors end at byte "
                f"{self._expected:,}"
            )
        self._hash.update(chunk)
        if self._expected is None:
            self._head += chunk
            self._parse_head()

    def _parse_head(self) -> None:
        if self._header_len is None:
            if len(self._head) < 8:
                return
            n = int.from_bytes(self._head[:8], "little")
            if n == 0:
                raise InvalidSafetensors("not a safetensors file: the header length is 0")
            if n > self.max_header_bytes:
                raise InvalidSafetensors(
                    f"not a safetensors file, or a header too long: its first 8 bytes claim a "
                    f"header of {n:,} bytes; the limit is {self.max_header_bytes:,}"
                )
            if 8 + n > self.max_bytes:
                raise FileTooLarge(
                    f"the header claims {n:,} bytes: over the file limit of {self.max_bytes:,}",
                    field="file",
                )
            self._header_len = n
        n = self._header_len
        if len(self._head) < 8 + n:
            return
        data_len = self._parse_header(bytes(self._head[8 : 8 + n]))
        self._expected = 8 + n + data_len
        if self._expected > self.max_bytes:
            raise FileTooLarge(
                f"the header describes a {self._expected:,}-byte file: over the limit of "
                f"{self.max_bytes:,}",
                field="file",
            )
        if self.size > self._expected:
            raise InvalidSafetensors(
                f"the file is longer than its header says: the header's tensors end at byte "
                f"{self._expected:,}"
            )
        self._head = bytearray()

    def _parse_header(self, raw: bytes) -> int:
        if not raw.lstrip().startswith(b"{"):
            raise InvalidSafetensors("not a safetensors file: the header is not a JSON object")
        try:
            header = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidSafetensors(f"the header is not valid JSON: {exc}") from None
        if not isinstance(header, dict):
            raise InvalidSafetensors("not a safetensors file: the header is not a JSON object")
        metadata = header.pop("__metadata__", {})
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise InvalidSafetensors("__metadata__ must be an object of strings")
        self._metadata = metadata
        if not header:
            raise InvalidSafetensors("the file holds no tensors")
        spans = sorted((_tensor_span(name, entry), name) for name, entry in header.items())
        position = 0
        previous = ""
        for (begin, end), name in spans:
            if begin < position:
                raise InvalidSafetensors(
                    f"tensors {previous!r} and {name!r} overlap (offsets {begin:,} < {position:,})"
                )
            if begin > position:
                raise InvalidSafetensors(
                    f"a hole in the data section before tensor {name!r} (bytes "
                    f"{position:,}-{begin:,} belong to no tensor)"
                )
            position, previous = end, name
        if self.require_lora:
            check_lora_names(header)
        self._tensors = len(header)
        return position

    def finish(self) -> SafetensorsInfo:
        """The file's facts; raises when the stream ended early."""
        if self.size == 0:
            raise InvalidSafetensors("the file is empty")
        if self._header_len is None:
            raise InvalidSafetensors(
                f"not a safetensors file: it ends after {self.size} bytes, inside the 8-byte "
                "header length"
            )
        if self._expected is None:
            raise InvalidSafetensors(
                f"the file ends inside its header: the header claims {self._header_len:,} bytes, "
                f"the file holds {self.size - 8:,} after the length"
            )
        if self.size != self._expected:
            raise InvalidSafetensors(
                f"the file is cut short: its header's tensors need {self._expected:,} bytes, "
                f"the file holds {self.size:,}"
            )
        return SafetensorsInfo(
            size=self.size,
            sha256=self._hash.hexdigest(),
            header_bytes=self._header_len,
            tensors=self._tensors,
            metadata=self._metadata,
        )


def _tensor_span(name: str, entry: Any) -> tuple[int, int]:
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise InvalidSafetensors(f"tensor {name!r} needs dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_SIZES:
        raise InvalidSafetensors(f"tensor {name!r} has an unknown dtype {dtype!r}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_RANK
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InvalidSafetensors(
            f"tensor {name!r}: shape must be a list of at most {MAX_RANK} non-negative integers"
        )
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
        or offsets[1] < offsets[0]
    ):
        raise InvalidSafetensors(
            f"tensor {name!r}: data_offsets must be [begin, end] with 0 <= begin <= end"
        )
    begin, end = offsets
    expected = math.prod(shape) * DTYPE_SIZES[dtype]
    if end - begin != expected:
        raise InvalidSafetensors(
            f"tensor {name!r}: {dtype} {shape} needs {expected:,} bytes but its offsets span "
            f"{end - begin:,}"
        )
    return begin, end


def check_lora_names(names: Iterable[str]) -> None:
    """Refuse unless some ``…lora_down…`` / ``…lora_A…`` tensor has its ``up``/``B`` partner."""
    present = set(names)
    for name in present:
        for match in _DOWN.finditer(name):
            down = match.group(0)
            partner = name[: match.start()] + _PARTNER[down] + name[match.end() :]
            if partner in present:
                return
    raise InvalidSafetensors(
        "this safetensors file is not a LoRA: no tensor pair named like "
        "'<layer>.lora_down.weight' + '<layer>.lora_up.weight' (or lora_A/lora_B)"
    )


async def checked(chunks: AsyncIterable[bytes], check: SafetensorsCheck) -> AsyncIterator[bytes]:
    """``chunks``, passed through ``check``; raises (so a blob ``put`` writes nothing) on the
    first bad byte or, after the last one, when the file is incomplete."""
    async for chunk in chunks:
        check.update(chunk)
        yield chunk
    check.finish()


def encode(
    tensors: dict[str, tuple[str, list[int]]], metadata: dict[str, str] | None = None
) -> bytes:
    """A safetensors file of zero-filled tensors ``name -> (dtype, shape)``: for tests and
    benchmarks that need a well-formed file of a given shape."""
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    position = 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * DTYPE_SIZES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [position, position + size]}
        position += size
    raw = orjson.dumps(header)
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    return len(raw).to_bytes(8, "little") + raw + bytes(position)


def check_file(path: Path, **limits: Any) -> SafetensorsInfo:
    """Check a file on disk (the worker's cache, the CLI)."""
    check = SafetensorsCheck(**limits)
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            check.update(chunk)
    return check.finish()
