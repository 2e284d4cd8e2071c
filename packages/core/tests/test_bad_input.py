"""Bad input is refused with a message and a field naming the problem, and nothing is written:
first by the Python models, and again by the Lua library for callers that bypass them."""

# The case tables read best with one case per line.
# ruff: noqa: E501

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import redis.asyncio as aioredis
from core_factories import claim_one, make_caps, make_spec, queue_keys, with_settings
from redis.exceptions import ResponseError

from emp_core.errors import InvalidInput, PayloadTooLarge
from emp_core.queue.keys import Keys
from emp_core.queue.queue import Queue
from emp_core.settings import QueueSettings


def bad(name: str, data: dict[str, Any], field: str, fragment: str) -> Any:
    return pytest.param({"service": "simulation", **data}, field, fragment, id=name)


BAD_JOBS = [
    # requirements: bad types
    bad("gpu-not-a-number", {"requirements": {"gpu_memory_gb": "lots"}}, "requirements.gpu_memory_gb", "number"),
    bad("gpu-numeric-string", {"requirements": {"gpu_memory_gb": "16"}}, "requirements.gpu_memory_gb", "number"),
    bad("gpu-bool", {"requirements": {"gpu_memory_gb": True}}, "requirements.gpu_memory_gb", "number"),
    bad("gpu-negative", {"requirements": {"gpu_memory_gb": -1}}, "requirements.gpu_memory_gb", "greater than or equal to 0"),
    bad("gpu-infinite", {"requirements": {"gpu_memory_gb": float("inf")}}, "requirements.gpu_memory_gb", "finite"),
    bad("cpu-fraction", {"requirements": {"cpu_cores": 1.5}}, "requirements.cpu_cores", "integer"),
    bad("cpu-string", {"requirements": {"cpu_cores": "8"}}, "requirements.cpu_cores", "integer"),
    bad("ram-list", {"requirements": {"ram_gb": [64]}}, "requirements.ram_gb", "number"),
    bad("models-not-a-list", {"requirements": {"models": "sdxl"}}, "requirements.models", "list"),
    bad("models-empty-name", {"requirements": {"models": [""]}}, "requirements.models.0", "at least 1"),
    bad("models-number", {"requirements": {"models": [7]}}, "requirements.models.0", "string"),
    bad("isolation-unknown", {"requirements": {"customer_isolation": "paranoid"}}, "requirements.customer_isolation", "strict"),
    bad("requirements-null", {"requirements": None}, "requirements", "dictionary"),
    bad("requirements-list", {"requirements": ["gpu"]}, "requirements", "dictionary"),
    bad("capabilities-list", {"requirements": {"capabilities": ["gpu"]}}, "requirements.capabilities", "dictionary"),
    # requirements: unknown fields
    bad("requirements-unknown-field", {"requirements": {"gpu_mem": 8}}, "requirements.gpu_mem", "Extra inputs"),
    bad("exclude-unknown-field", {"requirements": {"exclude": {"gpus": 1}}}, "requirements.exclude.gpus", "Extra inputs"),
    # requirements: capability paths
    bad("path-with-space", {"requirements": {"capabilities": {"gpu vendor": "x"}}}, "requirements.capabilities", "'gpu vendor' is not a dotted path"),
    bad("path-leading-dot", {"requirements": {"capabilities": {".gpu": "x"}}}, "requirements.capabilities", "'.gpu' is not a dotted path"),
    bad("path-trailing-dot", {"requirements": {"capabilities": {"gpu.": "x"}}}, "requirements.capabilities", "'gpu.' is not a dotted path"),
    bad("path-double-dot", {"requirements": {"capabilities": {"gpu..vendor": "x"}}}, "requirements.capabilities", "not a dotted path"),
    bad("path-nested-bad", {"requirements": {"capabilities": {"gpu": {"ven dor": "x"}}}}, "requirements.capabilities", "'ven dor' is not a dotted path"),
    bad("exclude-path-bad", {"requirements": {"exclude": {"capabilities": {"a/b": 1}}}}, "requirements.exclude.capabilities", "'a/b' is not a dotted path"),
    # requirements: null values
    bad("capability-null", {"requirements": {"capabilities": {"region": None}}}, "requirements.capabilities", "region: null cannot be required"),
    bad("capability-nested-null", {"requirements": {"capabilities": {"gpu": {"vendor": None}}}}, "requirements.capabilities", "gpu.vendor: null"),
    bad("capability-list-with-null", {"requirements": {"capabilities": {"features": ["a", None]}}}, "requirements.capabilities", "features: a list may hold only"),
    bad("capability-list-with-object", {"requirements": {"capabilities": {"features": [{"a": 1}]}}}, "requirements.capabilities", "features: a list may hold only"),
    bad("exclude-null", {"requirements": {"exclude": {"capabilities": {"region": None}}}}, "requirements.exclude.capabilities", "null cannot be required"),
    # unknown top-level fields
    bad("unknown-top-level", {"colour": "blue"}, "colour", "Extra inputs"),
    bad("misspelt-field", {"priorty": 5}, "priorty", "Extra inputs"),
    # priority
    bad("priority-fraction", {"priority": 1.5}, "priority", "integer"),
    bad("priority-string", {"priority": "5"}, "priority", "integer"),
    bad("priority-bool", {"priority": True}, "priority", "integer"),
    bad("priority-negative", {"priority": -1}, "priority", "greater than or equal to 0"),
    bad("priority-too-high", {"priority": 1001}, "priority", "less than or equal to 1000"),
    bad("priority-null", {"priority": None}, "priority", "integer"),
    # other fields
    bad("service-missing", {"service": None}, "service", "string"),
    bad("service-bad-name", {"service": "Image Gen"}, "service", "pattern"),
    bad("payload-not-object", {"payload": [1, 2]}, "payload", "dictionary"),
    bad("customer-bad-id", {"customer_id": "has space"}, "customer_id", "pattern"),
    bad("max-attempts-zero", {"max_attempts": 0}, "max_attempts", "greater than or equal to 1"),
    bad("timeout-zero", {"timeout_s": 0}, "timeout_s", "greater than 0"),
    bad("step-without-workflow", {"step": 1}, "workflow_id", "belong to a workflow"),
    bad("step-past-total", {"workflow_id": "wf", "step": 3, "total_steps": 2}, "step", "past total_steps"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "field", "fragment"), BAD_JOBS)
async def test_bad_job_is_refused_and_nothing_written(
    queue: Queue, redis: aioredis.Redis, data: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        await queue.submit(data)
    assert info.value.field == field
    assert fragment in info.value.message
    assert info.value.message.startswith(f"{field}: ")
    assert str(info.value) == info.value.message
    assert await queue_keys(redis, queue.keys) == set()


async def test_one_bad_job_in_a_batch_writes_none(queue: Queue, redis: aioredis.Redis) -> None:
    jobs: list[Any] = [make_spec(), {"service": "simulation", "priority": -1}, make_spec()]
    with pytest.raises(InvalidInput) as info:
        await queue.submit_many(jobs)
    assert info.value.field == "priority"
    assert info.value.message.startswith("job 1: priority")
    assert str(info.value) == info.value.message
    assert await queue_keys(redis, queue.keys) == set()


async def test_payload_over_the_configured_limit(
    queue: Queue, redis: aioredis.Redis, settings: QueueSettings
) -> None:
    small = Queue(redis, with_settings(settings, max_payload_bytes=1000))
    await small.submit(make_spec(payload={"prompt": "x" * 900}))
    keys_after_first = await queue_keys(redis, queue.keys)
    with pytest.raises(PayloadTooLarge) as info:
        await small.submit(make_spec(payload={"prompt": "x" * 1000}))
    assert info.value.field == "payload"
    assert "limit is 1,000" in info.value.message
    assert info.value.status_code == 413
    assert await queue_keys(redis, queue.keys) == keys_after_first


async def test_payload_limit_defaults_to_one_megabyte(queue: Queue, redis: aioredis.Redis) -> None:
    assert QueueSettings().max_payload_bytes == 1_000_000
    assert queue.settings.max_payload_bytes == 1_000_000
    with pytest.raises(PayloadTooLarge):
        await queue.submit(make_spec(payload={"image": "A" * 1_000_000}))
    assert await queue_keys(redis, queue.keys) == set()
    await queue.submit(make_spec(payload={"image": "A" * 999_000}))


# --- the Lua library refuses bad arguments too, before its first write -----------------------


async def snapshot(redis: aioredis.Redis, keys: Keys) -> dict[str, bytes | None]:
    """Every key of the queue with its serialized value, to show that a call changed nothing."""
    return {key: await redis.dump(key) for key in sorted(await queue_keys(redis, keys))}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("priority", "1.5"),
        ("priority", "5x"),
        ("priority", "-1"),
        ("priority", "1001"),
        ("priority", "inf"),
        ("max_attempts", "0"),
        ("max_attempts", "2.5"),
        ("timeout_s", "-1"),
        ("timeout_s", "nan"),
        ("step", "first"),
        ("total_steps", "0"),
        ("requirements", "not json"),
        ("payload", "[1]"),
    ],
)
async def test_lua_submit_refuses_bad_fields(
    queue: Queue, redis: aioredis.Redis, field: str, value: str
) -> None:
    await queue.submit(make_spec())
    before = await snapshot(redis, queue.keys)
    good = queue.prepare(make_spec(workflow_id="wf"))
    broken = dataclasses.replace(good, **{field: value})
    with pytest.raises(InvalidInput) as info:
        # The good job first: a refused batch writes none of its jobs.
        await queue.functions.submit([queue.prepare(make_spec()), broken], 100, 3600)
    assert info.value.field == field
    assert value in info.value.message or field in info.value.message
    assert await snapshot(redis, queue.keys) == before


async def test_submit_prepared_returns_the_stored_job_or_refuses_writing_nothing(
    queue: Queue, redis: aioredis.Redis
) -> None:
    """The API's submit: the job as Redis stored it, in one round trip on one node (the submit
    and the read pipelined); a bad call raises the Lua's domain error and writes nothing."""
    job = await queue.submit_prepared(queue.prepare(make_spec(customer_id="acme", priority=70)))
    assert (job.status.value, job.customer_id, job.priority, job.attempts) == (
        "pending", "acme", 70, 0,
    )  # fmt: skip
    assert job == await queue.get(job.id)
    before = await snapshot(redis, queue.keys)
    broken = dataclasses.replace(queue.prepare(make_spec()), payload="[1]")
    with pytest.raises(InvalidInput) as info:
        await queue.submit_prepared(broken)
    assert info.value.field == "payload"
    assert await snapshot(redis, queue.keys) == before


async def test_lua_submit_refuses_a_wrong_key_count(queue: Queue, redis: aioredis.Redis) -> None:
    args = queue.prepare(make_spec())
    k = queue.keys
    keys = [k.job(args.id), k.events(args.id), k.seq()]  # 3 of the 8 keys a job needs
    with pytest.raises(ResponseError, match=r"^EMP_INVALID arguments expected 1 jobs of 8 keys"):
        await redis.fcall("emp_submit", len(keys), *keys, k.base, 1, 100, 3600, *args.argv())
    assert await queue_keys(redis, queue.keys) == set()


async def test_lua_submit_refuses_a_fractional_priority_over_raw_fcall(
    queue: Queue, redis: aioredis.Redis
) -> None:
    args = dataclasses.replace(queue.prepare(make_spec()), priority="1.5")  # type: ignore[arg-type]
    k = queue.keys
    keys = [
        k.job(args.id), k.events(args.id), k.seq(), k.classes(args.service),
        k.pending(args.class_id), k.pending_count(), k.workflow(""), k.customer_jobs(""),
    ]  # fmt: skip
    with pytest.raises(ResponseError, match=r"^EMP_INVALID priority must be an integer from 0"):
        await redis.fcall("emp_submit", len(keys), *keys, k.base, 1, 100, 3600, *args.argv())
    assert await queue_keys(redis, queue.keys) == set()


@pytest.mark.parametrize("lease_ms", ["abc", "0", "-5", "1.5", "inf", ""])
async def test_lua_claim_refuses_a_bad_lease(
    queue: Queue, redis: aioredis.Redis, lease_ms: str
) -> None:
    job_id = await queue.submit(make_spec())
    before = await snapshot(redis, queue.keys)
    caps = make_caps()
    with pytest.raises(InvalidInput) as info:
        await queue.functions.claim(caps.worker_id, caps.services, caps.wire, lease_ms, 100, 100)  # type: ignore[arg-type]
    assert info.value.field == "lease_ms"
    assert "must be an integer of at least 1" in info.value.message
    assert await snapshot(redis, queue.keys) == before
    assert (await queue.get(job_id)).status == "pending"


async def test_lua_claim_refuses_a_wrong_key_count(queue: Queue, redis: aioredis.Redis) -> None:
    await queue.submit(make_spec())
    before = await snapshot(redis, queue.keys)
    caps = make_caps(services=["simulation", "comfyui"])
    with pytest.raises(InvalidInput) as info:
        await queue.functions.claim(caps.worker_id, ["simulation"], caps.wire, 1000, 100, 100)
    assert info.value.field == "keys"
    k = queue.keys
    raw = [k.worker("w1"), k.leases(), k.fence()]
    with pytest.raises(ResponseError, match=r"^EMP_INVALID keys "):
        await redis.fcall("emp_claim", len(raw), *raw, k.base, caps.wire, 1000, 100, 100)
    assert await snapshot(redis, queue.keys) == before


@pytest.mark.parametrize("capabilities", [b"not json", b"[1, 2]", b'{"services": ["simulation"]}'])
async def test_lua_claim_refuses_bad_capabilities(
    queue: Queue, redis: aioredis.Redis, capabilities: bytes
) -> None:
    await queue.submit(make_spec())
    before = await snapshot(redis, queue.keys)
    with pytest.raises(InvalidInput) as info:
        await queue.functions.claim("w1", ["simulation"], capabilities, 1000, 100, 100)
    assert info.value.field.startswith("capabilities")
    assert await snapshot(redis, queue.keys) == before


async def test_lua_reports_refuse_bad_arguments(queue: Queue, redis: aioredis.Redis) -> None:
    await queue.submit(make_spec())
    claimed = await claim_one(queue, make_caps())
    f, job_id, token = queue.functions, claimed.id, claimed.token
    before = await snapshot(redis, queue.keys)
    calls: list[tuple[str, Any]] = [
        ("lease_ms", f.heartbeat(job_id, token, "soon")),  # type: ignore[arg-type]
        ("lease_ms", f.heartbeat(job_id, token, 0)),
        ("progress", f.progress(job_id, token, 101, "", 100)),
        ("progress", f.progress(job_id, token, "half", "", 100)),  # type: ignore[arg-type]
        ("events_maxlen", f.progress(job_id, token, 50, "", 0)),
        ("result", f.complete("w1", job_id, token, b"{not json", 60, 100)),
        ("retention_s", f.complete("w1", job_id, token, b"1", 0, 100)),
        ("retryable", f.fail("w1", job_id, token, "e", 2, 0, 0, 60, 100)),  # type: ignore[arg-type]
        ("delay_ms", f.fail("w1", job_id, token, "e", True, -1, 0, 60, 100)),
        ("avoid_grace_ms", f.fail("w1", job_id, token, "e", True, 0, 1.5, 60, 100)),  # type: ignore[arg-type]
        ("retention_s", f.cancel(job_id, "r", 0, 100)),
        ("limit", f.reap(0, 60, 100, 10)),
        ("slot", f.rest("w1", make_caps().wire, 1, -1)),
        ("slot", f.rest("w1", make_caps().wire, 1, 5000)),
    ]
    for field, call in calls:
        with pytest.raises(InvalidInput) as info:
            await call
        assert info.value.field == field
    assert await snapshot(redis, queue.keys) == before
    await queue.complete(claimed, "still valid")
