"""What a job needs from a worker, parsed strictly and reduced to a canonical requirement class.

Jobs with equal (service, canonical requirements) form one *requirement class*; the pending index
groups jobs by class so that a claim looks at classes, never at individual jobs it cannot run.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from emp_core.jobs import jsonvalue

_PATH = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")

# Strict: a number, never a bool or a numeric string silently coerced (True would mean 1 GB).
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


def _check_capability_tree(value: dict[str, JsonValue], where: str) -> dict[str, JsonValue]:
    """Refuse keys that are not dotted paths and values that cannot be matched (null)."""
    for key, item in value.items():
        if not _PATH.match(key):
            raise ValueError(f"{where}{key!r} is not a dotted path of letters, digits, _ and -")
        if item is None:
            raise ValueError(f"{where}{key}: null cannot be required; leave the key out")
        if isinstance(item, dict):
            _check_capability_tree(item, f"{where}{key}.")
        if isinstance(item, list) and any(isinstance(x, dict | list) or x is None for x in item):
            raise ValueError(f"{where}{key}: a list may hold only strings, numbers and booleans")
    return value


class Exclusions(BaseModel):
    """The negative part: what must *not* be present on the worker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[Name] = Field(default_factory=list, max_length=100)
    capabilities: dict[str, JsonValue] = Field(default_factory=dict, max_length=100)

    @field_validator("capabilities", mode="before")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        jsonvalue.check(value, "requirements.exclude.capabilities")
        return value

    @field_validator("capabilities")
    @classmethod
    def _paths(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        return _check_capability_tree(value, "")


class Requirements(BaseModel):
    """The positive part plus ``exclude``; every field is optional, unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_memory_gb: NonNegative | None = None
    cpu_cores: Annotated[int, Field(ge=0, strict=True)] | None = None
    ram_gb: NonNegative | None = None
    models: list[Name] = Field(default_factory=list, max_length=100)
    customer_isolation: Literal["strict"] | None = None
    capabilities: dict[str, JsonValue] = Field(default_factory=dict, max_length=100)
    exclude: Exclusions = Field(default_factory=Exclusions)

    @field_validator("capabilities", mode="before")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        jsonvalue.check(value, "requirements.capabilities")
        return value

    @field_validator("capabilities")
    @classmethod
    def _paths(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        return _check_capability_tree(value, "")

    def canonical(self) -> dict[str, Any]:
        """The requirements with defaults dropped and lists sorted, equal for equal meaning."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        for part in (data, data.get("exclude", {})):
            if "models" in part:
                part["models"] = sorted(set(part["models"]))
        if data.get("exclude") == {}:
            del data["exclude"]
        return data

    def canonical_json(self) -> str:
        return orjson.dumps(self.canonical(), option=orjson.OPT_SORT_KEYS).decode()


def class_id(service: str, canonical_json: str) -> str:
    """Stable id of a requirement class: the same service and requirements give the same id.
    SHA-1 because the Lua library recomputes it (``redis.sha1hex``) and refuses a submit whose
    class id does not name its requirements."""
    digest = hashlib.sha1(f"{service}\n{canonical_json}".encode(), usedforsecurity=False)
    return digest.hexdigest()[:16]
