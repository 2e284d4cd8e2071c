"""What a worker advertises: services, hardware, models, customer access, custom capabilities."""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
Identifier = Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]
Service = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


def is_identifier(value: str) -> bool:
    """Whether ``value`` is an id as workers, customers and workflows carry it."""
    return re.fullmatch(IDENTIFIER_PATTERN, value) is not None


class Hardware(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Strict: a bool or a numeric string here is a mistake in a config file, not a number.
    gpu_memory_gb: float = Field(default=0, ge=0, strict=True, allow_inf_nan=False)
    cpu_cores: int = Field(default=0, ge=0, strict=True)
    ram_gb: float = Field(default=0, ge=0, strict=True, allow_inf_nan=False)


def _expand_dotted(tree: dict[str, Any]) -> dict[str, Any]:
    """``{"gpu.vendor": "x"}`` -> ``{"gpu": {"vendor": "x"}}``, so paths resolve one way only."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"capability {key!r} conflicts with a value at {part!r}")
            node = child
        value = _expand_dotted(value) if isinstance(value, dict) else value
        if isinstance(node.get(leaf), dict) and isinstance(value, dict):
            node[leaf].update(value)
        else:
            node[leaf] = value
    return out


class WorkerCapabilities(BaseModel):
    """A worker's self-description, sent with every claim."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    worker_id: Identifier
    machine_id: Identifier | None = None
    services: list[Service] = Field(min_length=1, max_length=32)
    hardware: Hardware = Field(default_factory=Hardware)
    models: dict[Service, list[str]] = Field(default_factory=dict)
    customer_isolation: Literal["none", "loose", "strict"] = "none"
    allowed_customers: list[Identifier] | None = Field(default=None, max_length=1000)
    denied_customers: list[Identifier] = Field(default_factory=list, max_length=1000)
    workflow_id: Identifier | None = None
    capabilities: dict[str, JsonValue] = Field(default_factory=dict)

    @field_validator("capabilities")
    @classmethod
    def _expand(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        return _expand_dotted(value)

    @model_validator(mode="after")
    def _unique_services(self) -> WorkerCapabilities:
        if len(set(self.services)) != len(self.services):
            raise ValueError("services: each service may be listed once")
        return self

    @cached_property
    def wire(self) -> bytes:
        """The JSON the claim function reads (computed once; the model is frozen)."""
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
