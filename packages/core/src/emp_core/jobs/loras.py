"""The LoRAs a job uses (ADR-010), as the API stores them in the job at submit.

A submitter names LoRAs by id; the API checks that the caller may use each one and resolves it
into a ``LoraRef``: the file's hash, size, scope and a signed download URL. The worker downloads by
URL and verifies the hash; the claim function reads hash and scope for its affinity score.
"""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

MAX_LORAS = 8
WEIGHT_LIMIT = 4.0

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
LoraScope = Literal["user", "shared"]


class LoraRef(BaseModel):
    """One LoRA of a job: what the worker needs to fetch, verify and apply it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=128)]
    name: Annotated[str, Field(min_length=1, max_length=255)]
    sha256: Sha256
    size: Annotated[int, Field(gt=0, strict=True)]
    scope: LoraScope
    url: Annotated[str, Field(min_length=1, max_length=4096)]
    weight: Annotated[float, Field(ge=-WEIGHT_LIMIT, le=WEIGHT_LIMIT, allow_inf_nan=False)] = 1.0

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        # Shown in progress messages ("downloading my-style.safetensors 40%"), never a path.
        if any(ch in value for ch in "/\\") or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise ValueError("must not contain path separators or control characters")
        return value


LoraList = Annotated[list[LoraRef], Field(max_length=MAX_LORAS)]
_LORA_LIST: TypeAdapter[list[LoraRef]] = TypeAdapter(list[LoraRef])


def unique_loras(loras: list[LoraRef]) -> list[LoraRef]:
    """Refuse the same file twice in one job: one weight per LoRA."""
    seen: set[str] = set()
    for ref in loras:
        if ref.sha256 in seen:
            raise ValueError(f"LoRA {ref.name!r} ({ref.sha256[:12]}…) is named twice")
        seen.add(ref.sha256)
    return loras


def encode_loras(loras: list[LoraRef]) -> bytes:
    """As stored in the job hash (``loras`` field): a JSON array of ``LoraRef`` objects."""
    return orjson.dumps([ref.model_dump() for ref in loras])


def decode_loras(raw: str | bytes | None) -> list[LoraRef]:
    if not raw:
        return []
    return _LORA_LIST.validate_json(raw)
