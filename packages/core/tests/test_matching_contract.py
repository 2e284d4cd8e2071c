"""One table of matching cases, run through the pure rules (``emp_core.jobs.matching``) and through
the real claim in ``lua/emp.lua``: both must give the expected answer, so the two stay in step.

Each row: the job's requirements, the worker's capabilities (keyword arguments of ``make_caps``),
the job's customer and workflow, and whether the worker may run the job.
"""

# The case tables read best with one case per line.
# ruff: noqa: E501

from __future__ import annotations

from typing import Any

import pytest
from core_factories import make_caps, make_spec

from emp_core.jobs.matching import job_matches
from emp_core.queue.queue import Queue


def case(
    name: str,
    expected: bool,
    *,
    req: dict[str, Any] | None = None,
    caps: dict[str, Any] | None = None,
    customer: str | None = None,
    workflow: str | None = None,
    service: str = "simulation",
) -> Any:
    return pytest.param(req or {}, caps or {}, customer, workflow, service, expected, id=name)


GPU = {"capabilities": {"gpu": {"vendor": "nvidia", "vram": 24, "arch": {"name": "ada"}}}}
FEATURES = {"capabilities": {"features": ["upscale", "inpaint", "lora"]}}

CASES = [
    # --- service ---
    case("service/same", True),
    case("service/not-offered", False, service="a1111"),
    case("service/one-of-several", True, service="a1111", caps={"services": ["simulation", "a1111"]}),
    case("service/no-requirements-any-worker", True, caps={"hardware": {"gpu_memory_gb": 80}}),
    # --- hardware minimums (worker >= job) ---
    case("gpu/above", True, req={"gpu_memory_gb": 8}, caps={"hardware": {"gpu_memory_gb": 16}}),
    case("gpu/equal", True, req={"gpu_memory_gb": 16}, caps={"hardware": {"gpu_memory_gb": 16}}),
    case("gpu/below", False, req={"gpu_memory_gb": 24}, caps={"hardware": {"gpu_memory_gb": 16}}),
    case("gpu/fraction-below", False, req={"gpu_memory_gb": 16.5}, caps={"hardware": {"gpu_memory_gb": 16}}),
    case("gpu/none-advertised", False, req={"gpu_memory_gb": 1}),
    case("gpu/zero-needed", True, req={"gpu_memory_gb": 0}),
    case("cpu/above", True, req={"cpu_cores": 4}, caps={"hardware": {"cpu_cores": 8}}),
    case("cpu/below", False, req={"cpu_cores": 16}, caps={"hardware": {"cpu_cores": 8}}),
    case("ram/above", True, req={"ram_gb": 32}, caps={"hardware": {"ram_gb": 64}}),
    case("ram/below", False, req={"ram_gb": 128}, caps={"hardware": {"ram_gb": 64}}),
    case(
        "hardware/all-hold", True,
        req={"gpu_memory_gb": 16, "cpu_cores": 4, "ram_gb": 32},
        caps={"hardware": {"gpu_memory_gb": 24, "cpu_cores": 8, "ram_gb": 64}},
    ),
    case(
        "hardware/one-fails", False,
        req={"gpu_memory_gb": 16, "cpu_cores": 4, "ram_gb": 32},
        caps={"hardware": {"gpu_memory_gb": 24, "cpu_cores": 2, "ram_gb": 64}},
    ),
    # --- models, per service ---
    case("models/present", True, req={"models": ["sdxl"]}, caps={"models": {"simulation": ["flux", "sdxl"]}}),
    case("models/all-present", True, req={"models": ["sdxl", "flux"]}, caps={"models": {"simulation": ["flux", "sdxl"]}}),
    case("models/one-missing", False, req={"models": ["sdxl", "flux"]}, caps={"models": {"simulation": ["sdxl"]}}),
    case("models/none-advertised", False, req={"models": ["sdxl"]}),
    case(
        "models/other-service-only", False, req={"models": ["sdxl"]},
        caps={"services": ["simulation", "a1111"], "models": {"a1111": ["sdxl"]}},
    ),
    case(
        "models/of-the-jobs-service", True, service="a1111", req={"models": ["sdxl"]},
        caps={"services": ["simulation", "a1111"], "models": {"a1111": ["sdxl"]}},
    ),
    # --- customer isolation ---
    case("strict/strict-worker", True, req={"customer_isolation": "strict"}, caps={"customer_isolation": "strict"}),
    case("strict/open-worker", False, req={"customer_isolation": "strict"}),
    case("strict/loose-worker", False, req={"customer_isolation": "strict"}, caps={"customer_isolation": "loose"}),
    case("strict-worker/ordinary-job", True, caps={"customer_isolation": "strict"}),
    # --- allow list ---
    case("allow/listed", True, customer="acme", caps={"allowed_customers": ["acme", "initech"]}),
    case("allow/not-listed", False, customer="globex", caps={"allowed_customers": ["acme"]}),
    case("allow/no-customer", False, caps={"allowed_customers": ["acme"]}),
    case("allow/empty-list", False, customer="acme", caps={"allowed_customers": []}),
    case("allow/listed-and-denied", False, customer="acme", caps={"allowed_customers": ["acme"], "denied_customers": ["acme"]}),
    # --- deny list ---
    case("deny/denied", False, customer="acme", caps={"denied_customers": ["acme"]}),
    case("deny/other-customer", True, customer="globex", caps={"denied_customers": ["acme"]}),
    case("deny/no-customer", True, caps={"denied_customers": ["acme"]}),
    # --- workflow pinning ---
    case("pin/same-workflow", True, workflow="wf1", caps={"workflow_id": "wf1"}),
    case("pin/other-workflow", False, workflow="wf2", caps={"workflow_id": "wf1"}),
    case("pin/no-workflow", False, caps={"workflow_id": "wf1"}),
    case("pin/unpinned-worker-takes-workflow-job", True, workflow="wf1"),
    case("pin/and-allowed", True, workflow="wf1", customer="acme", caps={"workflow_id": "wf1", "allowed_customers": ["acme"]}),
    case("pin/but-not-allowed", False, workflow="wf1", customer="acme", caps={"workflow_id": "wf1", "allowed_customers": ["globex"]}),
    case("pin/but-no-customer-with-allow-list", False, workflow="wf1", caps={"workflow_id": "wf1", "allowed_customers": ["acme"]}),
    case("pin/but-denied", False, workflow="wf1", customer="acme", caps={"workflow_id": "wf1", "denied_customers": ["acme"]}),
    # --- custom capabilities: dotted paths, equality ---
    case("custom/dotted-equal", True, req={"capabilities": {"gpu.vendor": "nvidia"}}, caps=GPU),
    case("custom/dotted-unequal", False, req={"capabilities": {"gpu.vendor": "amd"}}, caps=GPU),
    case("custom/deep-path", True, req={"capabilities": {"gpu.arch.name": "ada"}}, caps=GPU),
    case(
        "custom/worker-gives-dotted-keys", True, req={"capabilities": {"gpu.vendor": "nvidia"}},
        caps={"capabilities": {"gpu.vendor": "nvidia"}},
    ),
    case("custom/missing-path", False, req={"capabilities": {"gpu.driver": "550"}}, caps=GPU),
    case("custom/missing-root", False, req={"capabilities": {"region": "eu"}}),
    case("custom/path-through-scalar", False, req={"capabilities": {"gpu.vendor.name": "nvidia"}}, caps=GPU),
    case("custom/path-through-list", False, req={"capabilities": {"features.0": "upscale"}}, caps=FEATURES),
    case("custom/null-on-worker-is-missing", False, req={"capabilities": {"region": "eu"}}, caps={"capabilities": {"region": None}}),
    case("custom/bool-equal", True, req={"capabilities": {"nsfw": True}}, caps={"capabilities": {"nsfw": True}}),
    case("custom/bool-unequal", False, req={"capabilities": {"nsfw": True}}, caps={"capabilities": {"nsfw": False}}),
    case("custom/bool-is-not-number", False, req={"capabilities": {"nsfw": True}}, caps={"capabilities": {"nsfw": 1}}),
    case("custom/string-is-not-number", False, req={"capabilities": {"tier": "2"}}, caps={"capabilities": {"tier": 2}}),
    case("custom/string-vs-list", False, req={"capabilities": {"features": "upscale"}}, caps=FEATURES),
    # --- custom capabilities: numbers are minimums ---
    case("number/above", True, req={"capabilities": {"cuda": 12}}, caps={"capabilities": {"cuda": 12.4}}),
    case("number/equal", True, req={"capabilities": {"cuda": 12}}, caps={"capabilities": {"cuda": 12}}),
    case("number/below", False, req={"capabilities": {"cuda": 12}}, caps={"capabilities": {"cuda": 11.8}}),
    case("number/string-on-worker", False, req={"capabilities": {"cuda": 12}}, caps={"capabilities": {"cuda": "12"}}),
    case("number/bool-on-worker", False, req={"capabilities": {"cuda": 1}}, caps={"capabilities": {"cuda": True}}),
    # --- custom capabilities: lists must be contained ---
    case("list/contained", True, req={"capabilities": {"features": ["lora", "upscale"]}}, caps=FEATURES),
    case("list/one-missing", False, req={"capabilities": {"features": ["lora", "video"]}}, caps=FEATURES),
    case("list/scalar-on-worker", True, req={"capabilities": {"features": ["lora"]}}, caps={"capabilities": {"features": "lora"}}),
    case("list/scalar-on-worker-not-all", False, req={"capabilities": {"features": ["lora", "upscale"]}}, caps={"capabilities": {"features": "lora"}}),
    case("list/numbers", True, req={"capabilities": {"sm": [80, 89]}}, caps={"capabilities": {"sm": [75, 80, 89, 90]}}),
    case("list/number-is-not-string", False, req={"capabilities": {"sm": [80]}}, caps={"capabilities": {"sm": ["80"]}}),
    case("list/object-on-worker", False, req={"capabilities": {"gpu": ["nvidia"]}}, caps=GPU),
    # --- custom capabilities: objects key by key ---
    case("object/all-keys", True, req={"capabilities": {"gpu": {"vendor": "nvidia", "vram": 16}}}, caps=GPU),
    case("object/number-key-below", False, req={"capabilities": {"gpu": {"vendor": "nvidia", "vram": 48}}}, caps=GPU),
    case("object/missing-key", False, req={"capabilities": {"gpu": {"vendor": "nvidia", "driver": "550"}}}, caps=GPU),
    case("object/nested-dotted-key", True, req={"capabilities": {"gpu": {"arch.name": "ada"}}}, caps=GPU),
    case("object/nested-object", True, req={"capabilities": {"gpu": {"arch": {"name": "ada"}}}}, caps=GPU),
    case("object/against-scalar", False, req={"capabilities": {"gpu": {"vendor": "nvidia"}}}, caps={"capabilities": {"gpu": "nvidia"}}),
    case("object/against-list", False, req={"capabilities": {"features": {"lora": True}}}, caps=FEATURES),
    # --- custom capabilities: empty list or object asks only for presence ---
    case("empty-list/present", True, req={"capabilities": {"features": []}}, caps=FEATURES),
    case("empty-list/present-as-scalar", True, req={"capabilities": {"features": []}}, caps={"capabilities": {"features": "x"}}),
    case("empty-list/missing", False, req={"capabilities": {"features": []}}),
    case("empty-object/present", True, req={"capabilities": {"gpu": {}}}, caps=GPU),
    case("empty-object/empty-on-worker", True, req={"capabilities": {"gpu": {}}}, caps={"capabilities": {"gpu": {}}}),
    case("empty-object/missing", False, req={"capabilities": {"gpu": {}}}),
    case("empty-object/null-on-worker", False, req={"capabilities": {"gpu": {}}}, caps={"capabilities": {"gpu": None}}),
    # --- negative requirements: models ---
    case("exclude-models/present", False, req={"exclude": {"models": ["sd15"]}}, caps={"models": {"simulation": ["sd15", "sdxl"]}}),
    case("exclude-models/absent", True, req={"exclude": {"models": ["sd15"]}}, caps={"models": {"simulation": ["sdxl"]}}),
    case(
        "exclude-models/other-service", True, req={"exclude": {"models": ["sd15"]}},
        caps={"services": ["simulation", "a1111"], "models": {"a1111": ["sd15"]}},
    ),
    case(
        "exclude-models/with-required", True, req={"models": ["sdxl"], "exclude": {"models": ["sd15"]}},
        caps={"models": {"simulation": ["sdxl", "flux"]}},
    ),
    # --- negative requirements: capabilities ---
    case("exclude-list/any-item-present", False, req={"exclude": {"capabilities": {"features": ["video", "lora"]}}}, caps=FEATURES),
    case("exclude-list/none-present", True, req={"exclude": {"capabilities": {"features": ["video", "audio"]}}}, caps=FEATURES),
    case("exclude-list/scalar-on-worker", False, req={"exclude": {"capabilities": {"features": ["lora"]}}}, caps={"capabilities": {"features": "lora"}}),
    case("exclude-list/missing-on-worker", True, req={"exclude": {"capabilities": {"features": ["lora"]}}}),
    case("exclude-scalar/equal", False, req={"exclude": {"capabilities": {"region": "eu"}}}, caps={"capabilities": {"region": "eu"}}),
    case("exclude-scalar/unequal", True, req={"exclude": {"capabilities": {"region": "eu"}}}, caps={"capabilities": {"region": "us"}}),
    case("exclude-scalar/missing", True, req={"exclude": {"capabilities": {"region": "eu"}}}),
    case("exclude-scalar/dotted", False, req={"exclude": {"capabilities": {"gpu.vendor": "nvidia"}}}, caps=GPU),
    case("exclude-number/is-equality", False, req={"exclude": {"capabilities": {"cuda": 11}}}, caps={"capabilities": {"cuda": 11}}),
    case("exclude-number/not-a-minimum", True, req={"exclude": {"capabilities": {"cuda": 11}}}, caps={"capabilities": {"cuda": 12}}),
    case("exclude-bool/equal", False, req={"exclude": {"capabilities": {"debug": True}}}, caps={"capabilities": {"debug": True}}),
    case("exclude-bool/unequal", True, req={"exclude": {"capabilities": {"debug": True}}}, caps={"capabilities": {"debug": False}}),
    case("exclude-object/any-key-present", False, req={"exclude": {"capabilities": {"gpu": {"vendor": "nvidia", "vram": 99}}}}, caps=GPU),
    case("exclude-object/no-key-present", True, req={"exclude": {"capabilities": {"gpu": {"vendor": "amd", "vram": 99}}}}, caps=GPU),
    case("exclude-object/missing-root", True, req={"exclude": {"capabilities": {"gpu": {"vendor": "nvidia"}}}}),
    case("exclude-empty/list", True, req={"exclude": {"capabilities": {"features": []}}}, caps=FEATURES),
    case("exclude-empty/object", True, req={"exclude": {"capabilities": {"gpu": {}}}}, caps=GPU),
    # --- everything at once ---
    case(
        "all-rules/match", True, customer="acme", workflow="wf1",
        req={
            "gpu_memory_gb": 16, "cpu_cores": 4, "ram_gb": 32, "models": ["sdxl"],
            "customer_isolation": "strict",
            "capabilities": {"gpu.vendor": "nvidia", "features": ["lora"], "cuda": 12},
            "exclude": {"models": ["sd15"], "capabilities": {"region": "cn"}},
        },
        caps={
            "hardware": {"gpu_memory_gb": 24, "cpu_cores": 8, "ram_gb": 64},
            "models": {"simulation": ["sdxl"]}, "customer_isolation": "strict",
            "allowed_customers": ["acme"], "workflow_id": "wf1",
            "capabilities": {"gpu": {"vendor": "nvidia"}, "features": ["lora"], "cuda": 12.2, "region": "eu"},
        },
    ),
    case(
        "all-rules/one-exclusion-breaks-it", False, customer="acme", workflow="wf1",
        req={
            "gpu_memory_gb": 16, "models": ["sdxl"], "customer_isolation": "strict",
            "capabilities": {"gpu.vendor": "nvidia"},
            "exclude": {"capabilities": {"region": "eu"}},
        },
        caps={
            "hardware": {"gpu_memory_gb": 24}, "models": {"simulation": ["sdxl"]},
            "customer_isolation": "strict", "allowed_customers": ["acme"], "workflow_id": "wf1",
            "capabilities": {"gpu": {"vendor": "nvidia"}, "region": "eu"},
        },
    ),
]  # fmt: skip


@pytest.mark.parametrize(("req", "caps", "customer", "workflow", "service", "expected"), CASES)
async def test_matching_rule(
    queue: Queue,
    req: dict[str, Any],
    caps: dict[str, Any],
    customer: str | None,
    workflow: str | None,
    service: str,
    expected: bool,
) -> None:
    spec = make_spec(service=service, requirements=req, customer_id=customer, workflow_id=workflow)
    worker = make_caps(**caps)

    pure = job_matches(spec.service, spec.requirements, customer, workflow, worker)
    assert pure is expected, "emp_core.jobs.matching disagrees with the table"

    job_id = await queue.submit(spec)
    result = await queue.claim(worker)
    lua = result.claimed is not None
    assert lua is expected, "the Lua claim disagrees with the table"
    if lua:
        assert result.claimed is not None
        assert result.claimed.id == job_id
    else:
        assert (await queue.get(job_id)).status == "pending"


async def test_class_match_cache_does_not_leak_between_workers(queue: Queue) -> None:
    """The claim caches 'class matches capabilities'; a worker that cannot run a class must not
    inherit another worker's yes, nor the other way round."""
    await queue.submit(make_spec(requirements={"gpu_memory_gb": 24}))
    small = make_caps(worker_id="small", hardware={"gpu_memory_gb": 8})
    big = make_caps(worker_id="big", hardware={"gpu_memory_gb": 48})
    assert (await queue.claim(small)).claimed is None
    assert (await queue.claim(big)).claimed is not None
    await queue.submit(make_spec(requirements={"gpu_memory_gb": 24}))
    assert (await queue.claim(small)).claimed is None
    assert (await queue.claim(big)).claimed is not None
