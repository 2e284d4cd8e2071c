"""Payloads of the services with connectors are checked at submit: what can be known there is
refused with the field named, and nothing is written."""

from __future__ import annotations

from typing import Any

import pytest

from emp_core.errors import InvalidInput
from emp_core.jobs.payloads import validate_payload
from emp_core.queue.queue import Queue

OK = {"prompt": "a cat", "width": 512, "height": 512}
GRAPH = {"3": {"class_type": "KSampler", "inputs": {"seed": 1}}}


def case(name: str, service: str, payload: dict[str, Any], field: str, fragment: str) -> Any:
    return pytest.param(service, payload, field, fragment, id=name)


BAD = [
    case("width-not-eighth", "diffusers", {**OK, "width": 500}, "payload.width", "multiple of 8"),
    case(
        "height-too-big",
        "diffusers",
        {**OK, "height": 4096},
        "payload.height",
        "less than or equal to 2048",
    ),
    case(
        "width-too-small",
        "diffusers",
        {**OK, "width": 32},
        "payload.width",
        "greater than or equal to 64",
    ),
    case("width-string", "diffusers", {**OK, "width": "512"}, "payload.width", "integer"),
    case(
        "steps-zero", "diffusers", {**OK, "steps": 0}, "payload.steps", "greater than or equal to 1"
    ),
    case(
        "steps-too-many",
        "diffusers",
        {**OK, "steps": 1000},
        "payload.steps",
        "less than or equal to 150",
    ),
    case("no-prompt", "diffusers", {"width": 512}, "payload.prompt", "required"),
    case(
        "prompt-too-long",
        "diffusers",
        {**OK, "prompt": "x" * 2001},
        "payload.prompt",
        "at most 2000",
    ),
    case(
        "scheduler-unknown", "diffusers", {**OK, "scheduler": "magic"}, "payload.scheduler", "euler"
    ),
    case(
        "guidance-negative",
        "diffusers",
        {**OK, "guidance": -1},
        "payload.guidance",
        "greater than or equal to 0",
    ),
    case(
        "seed-negative",
        "diffusers",
        {**OK, "seed": -5},
        "payload.seed",
        "greater than or equal to 0",
    ),
    case(
        "images-too-many",
        "diffusers",
        {**OK, "num_images": 9},
        "payload.num_images",
        "less than or equal to 4",
    ),
    case("unknown-field", "diffusers", {**OK, "cfg": 7}, "payload.cfg", "Extra inputs"),
    case("comfy-no-workflow", "comfyui", {}, "payload.workflow", "required"),
    case(
        "comfy-ui-format",
        "comfyui",
        {"workflow": {"nodes": [], "links": []}},
        "payload.workflow",
        "not an API-format graph",
    ),
    case(
        "comfy-no-class-type",
        "comfyui",
        {"workflow": {"3": {"inputs": {}}}},
        "payload.workflow",
        "not an API-format graph",
    ),
    case("comfy-empty", "comfyui", {"workflow": {}}, "payload.workflow", "at least 1"),
]


@pytest.mark.parametrize(("service", "payload", "field", "fragment"), BAD)
async def test_bad_payloads_are_refused_at_submit(
    queue: Queue, redis, service, payload, field, fragment
):
    with pytest.raises(InvalidInput) as err:
        await queue.submit({"service": service, "payload": payload})
    assert err.value.field == field, err.value.message
    assert fragment in err.value.message
    assert await queue.depth() == {}


def test_good_payloads_pass() -> None:
    validate_payload("diffusers", OK)
    validate_payload(
        "diffusers",
        {**OK, "seed": 0, "scheduler": "dpmpp_2m", "num_images": 4, "negative_prompt": "blur"},
    )
    validate_payload("comfyui", {"workflow": GRAPH})
    validate_payload("anything-else", {"free": ["form"]})
