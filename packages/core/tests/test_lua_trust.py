"""The Lua functions trust nothing (issue 10, item 4): each is called directly, as any client, an
older deploy or a bug could, with arguments of the wrong type or shape, a class id that does not
name its requirements, or KEYS that disagree with ARGV. Each call is refused naming the field,
nothing is written, and other jobs still claim. A stored class or job that cannot be used is
quarantined with its reason instead of making every claim fail."""

# The case tables read best with one case per line.
# ruff: noqa: E501

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from core_factories import claim_one, claimed_id, make_caps, make_spec, queue_keys

from emp_core.errors import InvalidInput
from emp_core.jobs.requirements import class_id
from emp_core.queue.functions import SubmitArgs
from emp_core.queue.keys import Keys
from emp_core.queue.queue import Queue

# Keys that disagree with the arguments are refused by the Lua (EMP_INVALID); on a cluster, keys
# of another queue sit in another slot and the client refuses to send them first (as Redis would
# with CROSSSLOT). Either way nothing is written, which each test checks.
KEYS_REFUSED = r"^(EMP_INVALID keys |FCALL \w+ names keys of)"


async def snapshot(redis: aioredis.Redis, keys: Keys) -> dict[str, bytes | None]:
    return {key: await redis.dump(key) for key in sorted(await queue_keys(redis, keys))}


def with_requirements(args: SubmitArgs, requirements: str) -> SubmitArgs:
    """The job with other requirements and the class id that names them, so only the
    requirements' content is under test."""
    return dataclasses.replace(
        args, requirements=requirements, class_id=class_id(args.service, requirements)
    )


def submit_keys(k: Keys, a: SubmitArgs) -> list[str]:
    return [
        k.job(a.id), k.events(a.id), k.seq(), k.classes(a.service), k.pending(a.class_id),
        k.pending_count(), k.workflow(a.workflow_id), k.customer_jobs(a.customer_id),
    ]  # fmt: skip


async def raw_submit(redis: aioredis.Redis, base: str, keys: list[str], a: SubmitArgs) -> Any:
    return await redis.fcall("emp_submit", len(keys), *keys, base, 1, 100, 3600, *a.argv())


BAD_REQUIREMENTS = [
    pytest.param('{"gpu_memory_gb": "abc"}', "requirements.gpu_memory_gb", id="gpu-string"),
    pytest.param('{"gpu_memory_gb": true}', "requirements.gpu_memory_gb", id="gpu-bool"),
    pytest.param('{"gpu_memory_gb": -1}', "requirements.gpu_memory_gb", id="gpu-negative"),
    pytest.param('{"gpu_memory_gb": null}', "requirements.gpu_memory_gb", id="gpu-null"),
    pytest.param('{"cpu_cores": 1.5}', "requirements.cpu_cores", id="cpu-fraction"),
    pytest.param('{"ram_gb": [64]}', "requirements.ram_gb", id="ram-list"),
    pytest.param('{"models": "sdxl"}', "requirements.models", id="models-string"),
    pytest.param('{"models": {"a": 1}}', "requirements.models", id="models-object"),
    pytest.param('{"models": [7]}', "requirements.models.0", id="models-number"),
    pytest.param('{"models": [""]}', "requirements.models.0", id="models-empty-name"),
    pytest.param('{"customer_isolation": "paranoid"}', "requirements.customer_isolation", id="isolation"),
    pytest.param('{"capabilities": ["gpu"]}', "requirements.capabilities", id="capabilities-list"),
    pytest.param('{"capabilities": {"a b": 1}}', "requirements.capabilities", id="capability-path"),
    pytest.param('{"capabilities": {"a..b": 1}}', "requirements.capabilities", id="capability-double-dot"),
    pytest.param('{"capabilities": {"region": null}}', "requirements.capabilities", id="capability-null"),
    pytest.param('{"capabilities": {"f": [{"a": 1}]}}', "requirements.capabilities", id="capability-list-object"),
    pytest.param('{"capabilities": {"gpu": {"ven dor": 1}}}', "requirements.capabilities.gpu", id="capability-nested-path"),
    pytest.param('{"exclude": {"gpus": 1}}', "requirements.exclude.gpus", id="exclude-unknown"),
    pytest.param('{"exclude": {"models": "x"}}', "requirements.exclude.models", id="exclude-models-string"),
    pytest.param('{"gpu_mem": 8}', "requirements.gpu_mem", id="unknown-field"),
    pytest.param("[1]", "requirements", id="list"),
    pytest.param("not json", "requirements", id="not-json"),
]  # fmt: skip


@pytest.mark.parametrize(("requirements", "field"), BAD_REQUIREMENTS)
async def test_submit_validates_requirements_in_lua(
    queue: Queue, redis: aioredis.Redis, requirements: str, field: str
) -> None:
    await queue.submit(make_spec())
    before = await snapshot(redis, queue.keys)
    broken = with_requirements(queue.prepare(make_spec()), requirements)
    with pytest.raises(InvalidInput) as info:
        await queue.functions.submit([queue.prepare(make_spec()), broken], 100, 3600)
    assert info.value.field == field
    assert await snapshot(redis, queue.keys) == before


async def test_a_class_id_that_does_not_name_its_requirements_is_refused(
    queue: Queue, redis: aioredis.Redis
) -> None:
    """The issue's case: an 80 GB job filed under the class of a job with no requirements would
    be claimed by a 24 GB worker."""
    small = queue.prepare(make_spec())
    big = queue.prepare(make_spec(requirements={"gpu_memory_gb": 80}))
    forged = dataclasses.replace(big, class_id=small.class_id)
    before = await snapshot(redis, queue.keys)
    with pytest.raises(InvalidInput) as info:
        await queue.functions.submit([forged], 100, 3600)
    assert info.value.field == "class_id"
    assert await snapshot(redis, queue.keys) == before
    assert await queue.claim(make_caps(hardware={"gpu_memory_gb": 24})) is not None


BAD_FIELDS = [
    pytest.param("payload", b"[1, 2]", "payload", id="payload-list"),
    pytest.param("payload", b'"text"', "payload", id="payload-string"),
    pytest.param("payload", b"{not json", "payload", id="payload-broken"),
    pytest.param("id", "has space", "id", id="id-space"),
    pytest.param("id", "", "id", id="id-empty"),
    pytest.param("service", "Image Gen", "service", id="service-pattern"),
    pytest.param("customer_id", "a b", "customer_id", id="customer-pattern"),
    pytest.param("workflow_id", "{x}", "workflow_id", id="workflow-pattern"),
    pytest.param("timeout_s", "0", "timeout_s", id="timeout-zero"),
    pytest.param("step", "2", "workflow_id", id="step-without-workflow"),
    pytest.param("loras", b"{}", "loras", id="loras-object"),
    pytest.param("loras", b'[{"sha256": "abc", "scope": "user"}]', "loras.0.sha256", id="loras-short-hash"),
    pytest.param("loras", b'[{"sha256": "' + b"a" * 64 + b'", "scope": "mine"}]', "loras.0.scope", id="loras-scope"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "value", "field"), BAD_FIELDS)
async def test_submit_refuses_bad_fields(
    queue: Queue, redis: aioredis.Redis, name: str, value: Any, field: str
) -> None:
    before = await snapshot(redis, queue.keys)
    broken = dataclasses.replace(queue.prepare(make_spec()), **{name: value})
    with pytest.raises(InvalidInput) as info:
        await queue.functions.submit([broken], 100, 3600)
    assert info.value.field == field
    assert await snapshot(redis, queue.keys) == before


def _other_queue(k: Keys) -> Keys:
    return Keys(prefix=k.prefix, queue=k.queue + "x")


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda k, a, keys: keys.__setitem__(4, k.pending("0000000000000000")), id="pending-of-another-class"),
        pytest.param(lambda k, a, keys: keys.__setitem__(0, k.job("someone-else")), id="job-of-another-id"),
        pytest.param(lambda k, a, keys: keys.__setitem__(3, k.classes("other")), id="classes-of-another-service"),
        pytest.param(lambda k, a, keys: keys.__setitem__(2, _other_queue(k).seq()), id="seq-of-another-queue"),
        pytest.param(lambda k, a, keys: keys.__setitem__(7, k.customer_jobs("acme")), id="customer-not-in-argv"),
    ],
)  # fmt: skip
async def test_submit_refuses_keys_that_disagree_with_argv(
    queue: Queue, redis: aioredis.Redis, mangle: Any
) -> None:
    k = queue.keys
    a = queue.prepare(make_spec())
    keys = submit_keys(k, a)
    mangle(k, a, keys)
    before = await snapshot(redis, k)
    # On a cluster, keys of another queue are in another slot: the client refuses to send them
    # (as Redis would, with CROSSSLOT) before the Lua can.
    with pytest.raises(Exception, match=KEYS_REFUSED):
        await raw_submit(redis, k.base, keys, a)
    assert await snapshot(redis, k) == before


@pytest.mark.parametrize("base", ["emp:default", "emp:{a}{b}", "", "emp:{}"])
async def test_submit_refuses_a_base_without_one_hash_tag(
    queue: Queue, redis: aioredis.Redis, base: str
) -> None:
    a = queue.prepare(make_spec())
    before = await snapshot(redis, queue.keys)
    with pytest.raises(Exception, match=r"^EMP_INVALID base "):
        await raw_submit(redis, base, submit_keys(queue.keys, a), a)
    assert await snapshot(redis, queue.keys) == before


async def test_submit_refuses_a_base_that_disagrees_with_the_keys(
    queue: Queue, redis: aioredis.Redis
) -> None:
    a = queue.prepare(make_spec())
    other = _other_queue(queue.keys)
    with pytest.raises(Exception, match=KEYS_REFUSED):
        await raw_submit(redis, other.base, submit_keys(queue.keys, a), a)
    assert await queue_keys(redis, queue.keys) == set()
    assert await queue_keys(redis, other) == set()


BAD_CAPS = [
    pytest.param({"worker_id": "has space"}, "capabilities.worker_id", id="worker-id"),
    pytest.param({"services": "simulation"}, "capabilities.services", id="services-string"),
    pytest.param({"services": []}, "capabilities.services", id="services-empty"),
    pytest.param({"services": ["simulation", "simulation"]}, "capabilities.services", id="services-twice"),
    pytest.param({"hardware": {"gpu_memory_gb": "24"}}, "capabilities.hardware.gpu_memory_gb", id="gpu-string"),
    pytest.param({"hardware": {"cpu_cores": 1.5}}, "capabilities.hardware.cpu_cores", id="cpu-fraction"),
    pytest.param({"hardware": {"vram": 1}}, "capabilities.hardware.vram", id="hardware-unknown"),
    pytest.param({"hardware": [1]}, "capabilities.hardware", id="hardware-list"),
    pytest.param({"models": ["sdxl"]}, "capabilities.models", id="models-list"),
    pytest.param({"models": {"simulation": "sdxl"}}, "capabilities.models.simulation", id="models-string"),
    pytest.param({"customer_isolation": "total"}, "capabilities.customer_isolation", id="isolation"),
    pytest.param({"allowed_customers": "acme"}, "capabilities.allowed_customers", id="allowed-string"),
    pytest.param({"denied_customers": [1]}, "capabilities.denied_customers.0", id="denied-number"),
    pytest.param({"workflow_id": 5}, "capabilities.workflow_id", id="workflow-number"),
    pytest.param({"capabilities": [1]}, "capabilities.capabilities", id="capabilities-list"),
    pytest.param({"colour": "blue"}, "capabilities", id="unknown-field"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "field"), BAD_CAPS)
async def test_claim_validates_capabilities_in_lua(
    queue: Queue, redis: aioredis.Redis, change: dict[str, Any], field: str
) -> None:
    job_id = await queue.submit(make_spec())
    before = await snapshot(redis, queue.keys)
    caps = {**orjson.loads(make_caps().wire), **change}
    services = caps["services"] if isinstance(caps["services"], list) else ["simulation"]
    worker = caps["worker_id"] if isinstance(caps["worker_id"], str) else "w1"
    with pytest.raises(InvalidInput) as info:
        await queue.functions.claim(worker, services, orjson.dumps(caps), 1000, 100, 100)
    assert info.value.field == field
    assert await snapshot(redis, queue.keys) == before
    assert await claimed_id(queue, make_caps()) == job_id


async def test_claim_refuses_keys_that_disagree_with_argv(
    queue: Queue, redis: aioredis.Redis
) -> None:
    job_id = await queue.submit(make_spec())
    before = await snapshot(redis, queue.keys)
    k, caps = queue.keys, make_caps(worker_id="w1")
    other = _other_queue(k)
    cases = [
        [k.worker("w2"), k.leases(), k.fence(), k.delayed(), k.classes("simulation")],
        [k.worker("w1"), other.leases(), k.fence(), k.delayed(), k.classes("simulation")],
        [k.worker("w1"), k.leases(), k.fence(), k.delayed(), k.classes("comfyui")],
        [k.worker("w1"), k.delayed(), k.fence(), k.leases(), k.classes("simulation")],
    ]
    for keys in cases:
        with pytest.raises(Exception, match=KEYS_REFUSED):
            await redis.fcall("emp_claim", len(keys), *keys, k.base, caps.wire, 1000, 100, 10)
    keys = cases[0][:1] + cases[0][1:]
    with pytest.raises(Exception, match=r"^EMP_INVALID base "):
        await redis.fcall("emp_claim", len(keys), *keys, "emp", caps.wire, 1000, 100, 10)
    assert await snapshot(redis, queue.keys) == before
    assert await claimed_id(queue, caps) == job_id


async def test_reports_refuse_keys_that_disagree_with_argv(
    queue: Queue, redis: aioredis.Redis
) -> None:
    await queue.submit(make_spec())
    claimed = await claim_one(queue, make_caps(worker_id="w1"))
    j, t, k = claimed.id, claimed.token, queue.keys
    o = _other_queue(k)
    base = k.base
    calls: list[tuple[str, list[str], list[Any]]] = [
        ("emp_heartbeat", [k.job("other"), k.leases()], [base, j, t, 1000]),
        ("emp_heartbeat", [k.job(j), o.leases()], [base, j, t, 1000]),
        ("emp_progress", [k.job(j), k.events("other")], [base, j, t, 5, "", 100]),
        ("emp_complete", [k.job(j), k.events(j), k.leases(), k.worker("w2"), k.finished()], [base, j, t, b"1", 60, 100]),
        ("emp_complete", [k.job(j), k.events(j), k.leases(), k.worker("w1"), k.dead()], [base, j, t, b"1", 60, 100]),
        ("emp_fail", [k.job(j), k.events(j), k.leases(), k.worker("w1"), k.delayed(), k.finished(), k.dead()], [base, j, t, "e", 1, 0, 0, 60, 100]),
        ("emp_release", [k.job(j), k.events(j), k.leases(), k.worker("w9")], [base, j, t, "r", 100]),
        ("emp_cancel", [k.job(j), k.events(j), k.leases(), o.delayed(), k.finished()], [base, j, "r", 60, 100]),
        ("emp_reap", [k.leases(), k.delayed(), k.finished(), k.dead()], [base, 10, 60, 100]),
    ]  # fmt: skip
    before = await snapshot(redis, k)
    for name, keys, args in calls:
        with pytest.raises(Exception, match=KEYS_REFUSED):
            await redis.fcall(name, len(keys), *keys, *args)
    for name, keys, args in calls:  # the same calls with a base lacking its hash tag
        with pytest.raises(Exception, match=r"^(EMP_INVALID (base|keys) |FCALL \w+ names keys of)"):
            await redis.fcall(name, len(keys), *keys, "emp:nobraces", *args[1:])
    assert await snapshot(redis, k) == before
    await queue.complete(claimed, "still valid")


async def test_a_bad_stored_class_or_job_is_quarantined_and_claims_go_on(
    queue: Queue, redis: aioredis.Redis
) -> None:
    """Records written around the submit function (by hand, by a bug, by an older deploy): a
    class whose requirements do not decode, a pending job whose record is gone, one whose record
    says it is not pending. The claim sets each aside with its reason and takes the good job."""
    k = queue.keys
    good = await queue.submit(make_spec(priority=10))
    # A class that does not decode, with a job in it ahead of the good one.
    await redis.hset(k.classes("simulation"), "badclass00000000", "{not json")
    await redis.zadd(k.pending("badclass00000000"), {"ghost1": 1})
    # A pending entry whose job record is gone, and one whose record is not pending, in the
    # good job's class and ahead of it.
    cid = (await queue.get(good)).class_id
    done = await queue.submit(make_spec(priority=5))
    await redis.hset(k.job(done), "status", "completed")
    await redis.zadd(k.pending(cid), {"ghost2": 1, done: 2})

    assert await claimed_id(queue, make_caps()) == good
    quarantined = {
        key.decode(): orjson.loads(value)
        for key, value in (await redis.hgetall(k.quarantine())).items()
    }
    assert set(quarantined) == {"class:badclass00000000", "job:ghost2", f"job:{done}"}
    assert "JSON" in quarantined["class:badclass00000000"]["reason"]
    assert "missing" in quarantined["job:ghost2"]["reason"]
    assert "completed" in quarantined[f"job:{done}"]["reason"]
    assert not await redis.hexists(k.classes("simulation"), "badclass00000000")
    # Nothing is left to fail the next claims.
    assert (await queue.claim(make_caps())).claimed is None
    later = await queue.submit(make_spec())
    assert await claimed_id(queue, make_caps(worker_id="w2")) == later


async def test_a_class_of_the_wrong_shape_is_quarantined(
    queue: Queue, redis: aioredis.Redis
) -> None:
    """Decodes, but as requirements of the wrong type (the issue's ``{"models": "sdxl"}``):
    matching it would raise inside Lua for every claim of the service."""
    k = queue.keys
    await redis.hset(k.classes("simulation"), "shape00000000000", '{"models": "sdxl"}')
    await redis.zadd(k.pending("shape00000000000"), {"j1": 1})
    good = await queue.submit(make_spec())
    assert await claimed_id(queue, make_caps()) == good
    assert await redis.hexists(k.quarantine(), "class:shape00000000000")
