"""What the payload of a job for a known service must hold, checked at submit.

A job's payload is free-form JSON for services the queue knows nothing about. For the services
the project ships connectors for, what can be known without the worker (a width that is not a
multiple of 8, an unknown scheduler, a prompt over the limit, a ComfyUI workflow that is not an
API-format graph) is refused at submit by ``validate_payload`` with ``InvalidInput`` naming the
field (``payload.width``). What only the worker knows (its model's largest size, whether a LoRA
fits the model) fails the job as not retryable, with a message naming the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from emp_core.errors import invalid_from_validation

# The scheduler names a diffusers job may ask for; the worker maps each to a diffusers class.
SCHEDULERS = ("euler", "euler_a", "ddim", "dpmpp_2m", "pndm", "deis", "heun", "unipc")
Scheduler = Literal["euler", "euler_a", "ddim", "dpmpp_2m", "pndm", "deis", "heun", "unipc"]

MAX_PROMPT_CHARS = 2000
MIN_SIZE = 64
MAX_SIZE = 2048  # the largest side any worker accepts; a worker's model may allow less
MAX_STEPS = 150
MAX_IMAGES = 4
MAX_SEED = 2**32 - 1


def _multiple_of_8(value: int) -> int:
    if value % 8:
        raise ValueError(f"must be a multiple of 8, got {value}")
    return value


Side = Annotated[int, Field(ge=MIN_SIZE, le=MAX_SIZE, strict=True)]


class DiffusersPayload(BaseModel):
    """The payload of a ``diffusers`` job. ``seed`` absent: the worker picks one and reports it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
    negative_prompt: Annotated[str, Field(max_length=MAX_PROMPT_CHARS)] = ""
    width: Side = 512
    height: Side = 512
    steps: Annotated[int, Field(ge=1, le=MAX_STEPS, strict=True)] = 30
    guidance: Annotated[float, Field(ge=0, le=30, allow_inf_nan=False)] = 7.5
    seed: Annotated[int, Field(ge=0, le=MAX_SEED, strict=True)] | None = None
    scheduler: Scheduler = "euler"
    num_images: Annotated[int, Field(ge=1, le=MAX_IMAGES, strict=True)] = 1
    # Report a small preview image every this many steps (0: never).
    preview_every: Annotated[int, Field(ge=0, le=MAX_STEPS, strict=True)] = 5

    @field_validator("width", "height")
    @classmethod
    def _eighths(cls, value: int) -> int:
        return _multiple_of_8(value)


class ComfyUIPayload(BaseModel):
    """The payload of a ``comfyui`` job: an API-format workflow graph (what ComfyUI's "Save
    (API)" writes): node id -> ``{"class_type": ..., "inputs": {...}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workflow: dict[str, dict[str, JsonValue]] = Field(min_length=1, max_length=2000)

    @field_validator("workflow", mode="before")
    @classmethod
    def _not_ui_format(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("nodes"), list):
            raise ValueError(
                "this is a UI-format workflow (nodes and links), not an API-format graph: "
                "export it with Save (API)"
            )
        return value

    @field_validator("workflow")
    @classmethod
    def _api_format(cls, value: dict[str, dict[str, JsonValue]]) -> dict[str, dict[str, JsonValue]]:
        for node_id, node in value.items():
            if not isinstance(node.get("class_type"), str) or not node["class_type"]:
                raise ValueError(
                    f"node {node_id!r} has no class_type: not an API-format graph "
                    "(export it with Save (API), not Save)"
                )
            if not isinstance(node.get("inputs", {}), dict):
                raise ValueError(f"node {node_id!r}: inputs must be an object")
        return value


_VALIDATORS: dict[str, Callable[[dict[str, Any]], BaseModel]] = {
    "diffusers": DiffusersPayload.model_validate,
    "comfyui": ComfyUIPayload.model_validate,
}


def validate_payload(service: str, payload: dict[str, Any]) -> None:
    """Refuse a payload a known service cannot run, naming the field (``payload.…``)."""
    check = _VALIDATORS.get(service)
    if check is None:
        return
    try:
        check(payload)
    except ValidationError as exc:
        raise invalid_from_validation(exc, root="payload") from None


def parse_diffusers(payload: dict[str, Any]) -> DiffusersPayload:
    """The payload of a diffusers job, or ``InvalidInput`` naming the field."""
    try:
        return DiffusersPayload.model_validate(payload)
    except ValidationError as exc:
        raise invalid_from_validation(exc, root="payload") from None


def parse_comfyui(payload: dict[str, Any]) -> ComfyUIPayload:
    try:
        return ComfyUIPayload.model_validate(payload)
    except ValidationError as exc:
        raise invalid_from_validation(exc, root="payload") from None
