"""The submit form: what a person types, turned into a job spec, and errors put back next to the
field they concern.

The form speaks in fields a person fills in (``need_gpu_memory_gb``, capability rows); the queue
speaks in ``JobSpec`` paths (``requirements.gpu_memory_gb``). Parsing the text here raises
``InvalidInput`` with the spec's path too, so every error, ours or the queue's, reaches the page
through one mapping (``form_field``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import FormData

from emp_core.errors import EmpError, InvalidInput
from emp_core.jobs import jsonvalue
from emp_core.jobs.job import DEFAULT_PRIORITY

FORM = "_form"  # errors that belong to no one field: shown above the form
DEFAULT_PAYLOAD = '{\n  "steps": 20,\n  "step_time": 0.1\n}'

# Spec path prefix -> form field; the longest matching prefix wins.
_FIELDS: dict[str, str] = {
    "service": "service",
    "priority": "priority",
    "max_attempts": "max_attempts",
    "timeout_s": "timeout_s",
    "payload": "payload",
    "loras": "loras",
    "requirements": "need_caps",
    "requirements.gpu_memory_gb": "need_gpu_memory_gb",
    "requirements.cpu_cores": "need_cpu_cores",
    "requirements.ram_gb": "need_ram_gb",
    "requirements.models": "need_models",
    "requirements.customer_isolation": "need_strict",
    "requirements.capabilities": "need_caps",
    "requirements.exclude": "avoid_caps",
    "requirements.exclude.models": "avoid_models",
    "requirements.exclude.capabilities": "avoid_caps",
}
_NAMES = re.compile(r"[\s,]+")


def form_field(spec_path: str | None) -> str:
    """The form field that shows an error about ``spec_path``."""
    if not spec_path:
        return FORM
    best = ""
    for prefix in _FIELDS:
        if (spec_path == prefix or spec_path.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return _FIELDS[best] if best else FORM


def field_errors(exc: EmpError) -> dict[str, str]:
    """``{form field: message}`` for one error, the message without its ``path:`` prefix (the
    field it stands next to says that)."""
    message = exc.message
    if exc.field and message.startswith(f"{exc.field}: "):
        message = message[len(exc.field) + 2 :]
    message = message[:1].upper() + message[1:]
    return {form_field(exc.field): message}


@dataclass(slots=True)
class CapabilityRow:
    path: str = ""
    value: str = ""


def _rows(form: FormData, prefix: str) -> list[CapabilityRow]:
    paths = [str(v) for v in form.getlist(f"{prefix}_path")]
    values = [str(v) for v in form.getlist(f"{prefix}_value")]
    size = max(len(paths), len(values))
    paths += [""] * (size - len(paths))
    values += [""] * (size - len(values))
    return [CapabilityRow(p.strip(), v.strip()) for p, v in zip(paths, values, strict=True)]


def _text(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else default


@dataclass(slots=True)
class JobForm:
    """The submit form's values as typed, so a refused form comes back as it was."""

    service: str = "simulation"
    priority: str = str(DEFAULT_PRIORITY)
    max_attempts: str = "3"
    payload: str = DEFAULT_PAYLOAD
    need_gpu_memory_gb: str = ""
    need_cpu_cores: str = ""
    need_ram_gb: str = ""
    need_models: str = ""
    need_strict: bool = False
    need_caps: list[CapabilityRow] = field(default_factory=list)
    avoid_models: str = ""
    avoid_caps: list[CapabilityRow] = field(default_factory=list)
    # The LoRAs ticked on the picker: id -> weight as typed.
    loras: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_form(cls, form: FormData) -> JobForm:
        payload = form.get("payload")
        return cls(
            service=_text(form, "service"),
            priority=_text(form, "priority"),
            max_attempts=_text(form, "max_attempts"),
            payload=payload if isinstance(payload, str) else "",
            need_gpu_memory_gb=_text(form, "need_gpu_memory_gb"),
            need_cpu_cores=_text(form, "need_cpu_cores"),
            need_ram_gb=_text(form, "need_ram_gb"),
            need_models=_text(form, "need_models"),
            need_strict=form.get("need_strict") in ("on", "true", "1"),
            need_caps=_rows(form, "need_cap"),
            avoid_models=_text(form, "avoid_models"),
            avoid_caps=_rows(form, "avoid_cap"),
            loras={
                str(lora_id): _text(form, f"lora_weight_{lora_id}")
                for lora_id in form.getlist("lora")
            },
        )

    def to_spec(self) -> dict[str, Any]:
        """The job as ``JobSpec`` takes it; ``InvalidInput`` naming the spec path when the text
        does not parse (the queue checks everything else)."""
        requirements: dict[str, Any] = {}
        exclude: dict[str, Any] = {}
        for name, text, kind in (
            ("gpu_memory_gb", self.need_gpu_memory_gb, float),
            ("cpu_cores", self.need_cpu_cores, int),
            ("ram_gb", self.need_ram_gb, float),
        ):
            if text:
                requirements[name] = _number(text, kind, f"requirements.{name}")
        if models := _names(self.need_models):
            requirements["models"] = models
        if self.need_strict:
            requirements["customer_isolation"] = "strict"
        if caps := _capabilities(self.need_caps, "requirements.capabilities"):
            requirements["capabilities"] = caps
        if models := _names(self.avoid_models):
            exclude["models"] = models
        if caps := _capabilities(self.avoid_caps, "requirements.exclude.capabilities"):
            exclude["capabilities"] = caps
        if exclude:
            requirements["exclude"] = exclude
        spec: dict[str, Any] = {
            "service": self.service,
            "priority": _number(self.priority or str(DEFAULT_PRIORITY), int, "priority"),
            "max_attempts": _number(self.max_attempts or "3", int, "max_attempts"),
            "payload": _payload(self.payload),
            "requirements": requirements,
        }
        if self.loras:
            spec["loras"] = [
                {"id": lora_id, "weight": _number(weight or "1", float, f"loras.{i}.weight")}
                for i, (lora_id, weight) in enumerate(self.loras.items())
            ]
        return spec

    def rows(self, which: str, spare: int = 1) -> list[CapabilityRow]:
        """The capability rows to show: those typed, plus ``spare`` empty ones to fill in."""
        typed = [r for r in (self.need_caps if which == "need" else self.avoid_caps) if r.path]
        return typed + [CapabilityRow() for _ in range(spare if typed else max(spare, 1))]


def _number(text: str, kind: type[int] | type[float], path: str) -> int | float:
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise InvalidInput(f"{path}: must be {what}, not {text!r}", field=path) from None


def _names(text: str) -> list[str]:
    return [name for name in _NAMES.split(text) if name]


def _payload(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    _shallow(text, "payload")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"payload: is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            field="payload",
        ) from None
    if not isinstance(value, dict):
        raise InvalidInput(
            'payload: must be a JSON object, like {"steps": 20}', field="payload"
        ) from None
    return value


def _shallow(text: str, path: str) -> None:
    """Refuse text nested deeper than the queue takes before parsing it: the parser recurses, and
    a 10,000-deep document would end the request in a ``RecursionError``. The API checks its
    bodies against the same ``MAX_DEPTH``."""
    if jsonvalue.too_deep(text, jsonvalue.MAX_DEPTH) is not None:
        raise InvalidInput(
            f"{path}: is nested deeper than {jsonvalue.MAX_DEPTH} levels", field=path
        )


def _capabilities(rows: Iterable[CapabilityRow], path: str) -> dict[str, Any]:
    """Rows of ``path = value``; a value that reads as JSON is JSON (``24``, ``true``,
    ``["a", "b"]``), anything else is text."""
    out: dict[str, Any] = {}
    for row in rows:
        if not row.path and not row.value:
            continue
        if not row.path:
            raise InvalidInput(f"{path}: name the capability for {row.value!r}", field=path)
        _shallow(row.value, f"{path}.{row.path}")
        try:
            out[row.path] = json.loads(row.value) if row.value else True
        except json.JSONDecodeError:
            out[row.path] = row.value
    return out
