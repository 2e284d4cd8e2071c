"""The matching rules, as pure functions. ``lua/emp.lua`` implements the same rules inside the
claim; ``packages/core/tests/test_matching_contract.py`` runs one table of cases through both.

A job matches a worker when the service is one of the worker's, hardware minimums hold, every
required model of that service is present, customer isolation holds, a pinned worker sees only its
workflow, every custom capability holds, and no excluded model or capability is present.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.jobs.requirements import Requirements

_MISSING = object()


def resolve(tree: Any, path: str) -> Any:
    """The value at a dotted path in nested mappings, or ``_MISSING``. A null counts as missing,
    as it does in the Lua (cjson's null is not a value a requirement can hold)."""
    node = tree
    for part in path.split("."):
        if not isinstance(node, Mapping) or node.get(part) is None:
            return _MISSING
        node = node[part]
    return node


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _equal(a: Any, b: Any) -> bool:
    """Equality as Lua sees it: numbers by value, everything else only within one type."""
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    return type(a) is type(b) and bool(a == b)


def _contains(held: list[Any], item: Any) -> bool:
    return any(_equal(h, item) for h in held)


def satisfies(have: Any, want: Any) -> bool:
    """One custom capability: a list must be contained, a number is a minimum, an object is
    checked key by key, anything else is equality. An empty list or object asks only that the
    worker has some value there."""
    if have is _MISSING:
        return False
    if want == [] or want == {}:
        return True
    if isinstance(want, list):
        held = _as_list(have)
        return all(_contains(held, item) for item in want)
    if isinstance(want, Mapping):
        return all(satisfies(resolve(have, key), sub) for key, sub in want.items())
    if _is_number(want):
        return _is_number(have) and have >= want
    return _equal(have, want)


def present(have: Any, banned: Any) -> bool:
    """One negative requirement: true when the worker holds what is excluded (any item of a list,
    any key of an object, or an equal value)."""
    if have is _MISSING:
        return False
    if isinstance(banned, list):
        held = _as_list(have)
        return any(_contains(held, item) for item in banned)
    if isinstance(banned, Mapping):
        return any(present(resolve(have, key), sub) for key, sub in banned.items())
    return _equal(have, banned)


def class_matches(service: str, req: Requirements, caps: WorkerCapabilities) -> bool:
    """Whether a worker can run jobs of this requirement class (everything but per-job fields)."""
    return not unmet(service, req, caps)


def unmet(service: str, req: Requirements, caps: WorkerCapabilities) -> list[str]:
    """The requirements of a class this worker does not meet, each named as a person would
    read it (empty when it can run the class): the studio says why a job waits with these."""
    if service not in caps.services:
        return [f"service {service}"]
    missing: list[str] = []
    hw = caps.hardware
    if req.gpu_memory_gb is not None and hw.gpu_memory_gb < req.gpu_memory_gb:
        missing.append(f"gpu_memory_gb ≥ {req.gpu_memory_gb:g}")
    if req.cpu_cores is not None and hw.cpu_cores < req.cpu_cores:
        missing.append(f"cpu_cores ≥ {req.cpu_cores:g}")
    if req.ram_gb is not None and hw.ram_gb < req.ram_gb:
        missing.append(f"ram_gb ≥ {req.ram_gb:g}")
    models = caps.models.get(service, [])
    missing += [f"model {m}" for m in req.models if m not in models]
    if req.customer_isolation == "strict" and caps.customer_isolation != "strict":
        missing.append("customer_isolation strict")
    missing += [
        f"capability {p}" for p, v in req.capabilities.items()
        if not satisfies(resolve(caps.capabilities, p), v)
    ]  # fmt: skip
    missing += [f"no model {m}" for m in req.exclude.models if m in models]
    missing += [
        f"no capability {p}" for p, v in req.exclude.capabilities.items()
        if present(resolve(caps.capabilities, p), v)
    ]  # fmt: skip
    return missing


def job_admitted(
    customer_id: str | None, workflow_id: str | None, caps: WorkerCapabilities
) -> bool:
    """The per-job rules: customer allow and deny lists, and workflow pinning."""
    if caps.workflow_id is not None and workflow_id != caps.workflow_id:
        return False
    if caps.allowed_customers is not None and customer_id not in caps.allowed_customers:
        return False
    return customer_id is None or customer_id not in caps.denied_customers


def job_matches(
    service: str,
    req: Requirements,
    customer_id: str | None,
    workflow_id: str | None,
    caps: WorkerCapabilities,
) -> bool:
    """Every matching rule at once."""
    return class_matches(service, req, caps) and job_admitted(customer_id, workflow_id, caps)
