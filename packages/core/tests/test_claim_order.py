"""Which pending job a claim takes: priority, then submit order, with workflow steps inheriting
their workflow's priority and age; a workflow belongs to one customer."""

from __future__ import annotations

import random
from typing import Any

import pytest
import redis.asyncio as aioredis
from core_factories import claimed_id, make_caps, make_spec, queue_keys, with_settings

from emp_core.errors import InvalidInput
from emp_core.jobs.job import JobSpec
from emp_core.jobs.matching import job_matches
from emp_core.queue.queue import Queue


async def drain(queue: Queue, caps_kw: dict[str, Any] | None = None) -> list[str]:
    """Claim until nothing is left; the ids in claim order."""
    caps = make_caps(**(caps_kw or {}))
    order = []
    while (job_id := await claimed_id(queue, caps)) is not None:
        order.append(job_id)
    return order


async def test_higher_priority_first_then_first_submitted(queue: Queue) -> None:
    priorities = [10, 90, 50, 90, 50, 10, 1000, 0]
    ids = [await queue.submit(make_spec(priority=p)) for p in priorities]
    expected = [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-priorities[i], i))]
    assert await drain(queue) == expected


async def test_fifo_within_a_priority(queue: Queue) -> None:
    ids = await queue.submit_many([make_spec() for _ in range(20)])
    assert await drain(queue) == ids


async def test_order_holds_across_requirement_classes(queue: Queue) -> None:
    """Each class is its own pending set; the claim still takes the best head of all of them."""
    classes = [{}, {"gpu_memory_gb": 8}, {"models": ["sdxl"]}, {"capabilities": {"tier": 2}}]
    specs = [
        make_spec(priority=p, requirements=classes[i % len(classes)])
        for i, p in enumerate([50, 50, 70, 50, 70, 10, 50, 70])
    ]
    ids = [await queue.submit(s) for s in specs]
    expected = [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-specs[i].priority, i))]
    caps = {
        "hardware": {"gpu_memory_gb": 16},
        "models": {"simulation": ["sdxl"]},
        "capabilities": {"tier": 3},
    }
    assert await drain(queue, caps) == expected


async def test_order_holds_across_services(queue: Queue) -> None:
    a = await queue.submit(make_spec(service="a1111", priority=50))
    b = await queue.submit(make_spec(service="simulation", priority=50))
    c = await queue.submit(make_spec(service="simulation", priority=60))
    d = await queue.submit(make_spec(service="a1111", priority=60))
    assert await drain(queue, {"services": ["simulation", "a1111"]}) == [c, d, a, b]


async def test_an_older_workflows_next_step_is_not_overtaken(queue: Queue) -> None:
    caps = make_caps()
    step1 = await queue.submit(make_spec(workflow_id="wf-old", step=1, total_steps=2))
    assert await claimed_id(queue, caps) == step1
    newer = await queue.submit(make_spec())
    step2 = await queue.submit(make_spec(workflow_id="wf-old", step=2, total_steps=2))
    assert await drain(queue) == [step2, newer]


async def test_steps_inherit_the_workflows_priority(queue: Queue) -> None:
    caps = make_caps()
    step1 = await queue.submit(make_spec(priority=80, workflow_id="wf-urgent", step=1))
    assert await claimed_id(queue, caps) == step1
    ordinary = await queue.submit(make_spec(priority=50))
    # The step asks for a low priority; it runs at its workflow's.
    step2 = await queue.submit(make_spec(priority=5, workflow_id="wf-urgent", step=2))
    assert (await queue.get(step2)).priority == 80
    assert await drain(queue) == [step2, ordinary]


async def test_a_low_priority_workflow_stays_low(queue: Queue) -> None:
    await queue.submit(make_spec(priority=5, workflow_id="wf-slow", step=1))
    urgent = await queue.submit(make_spec(priority=50))
    step2 = await queue.submit(make_spec(priority=99, workflow_id="wf-slow", step=2))
    order = await drain(queue)
    assert order[0] == urgent
    assert step2 in order[1:]


async def test_steps_of_one_workflow_share_a_score(queue: Queue, redis: aioredis.Redis) -> None:
    ids = await queue.submit_many(
        [make_spec(workflow_id="wf", customer_id="acme", step=i) for i in (1, 2, 3)]
    )
    scores = {(await redis.hget(queue.keys.job(i), "score")) for i in ids}
    assert len(scores) == 1


@pytest.mark.parametrize(
    ("first", "second"),
    [("acme", "globex"), ("acme", None), (None, "acme")],
    ids=["two-customers", "customer-then-none", "none-then-customer"],
)
async def test_a_workflow_with_two_customers_is_refused(
    queue: Queue, redis: aioredis.Redis, first: str | None, second: str | None
) -> None:
    await queue.submit(make_spec(workflow_id="wf", customer_id=first))
    before = await queue_keys(redis, queue.keys)
    with pytest.raises(InvalidInput) as info:
        await queue.submit(make_spec(workflow_id="wf", customer_id=second))
    assert info.value.field == "workflow_id"
    assert "one customer" in info.value.message
    assert await queue_keys(redis, queue.keys) == before
    assert await queue.depth() == {"simulation": 1}


async def test_a_batch_mixing_customers_in_one_workflow_writes_nothing(
    queue: Queue, redis: aioredis.Redis
) -> None:
    with pytest.raises(InvalidInput) as info:
        await queue.submit_many(
            [
                make_spec(workflow_id="wf", customer_id="acme"),
                make_spec(workflow_id="wf", customer_id="globex"),
            ]
        )
    assert info.value.field == "workflow_id"
    assert await queue_keys(redis, queue.keys) == set()


async def test_depth_counts_pending_per_service(queue: Queue) -> None:
    await queue.submit_many([make_spec() for _ in range(3)])
    await queue.submit(make_spec(service="a1111"))
    assert await queue.depth() == {"simulation": 3, "a1111": 1}
    await claimed_id(queue, make_caps())
    assert await queue.depth() == {"simulation": 2, "a1111": 1}


# --- drain order against the pure rules, over many customers, workflows and classes -----------

CUSTOMERS = ["a", "b", "c", "d", None]
WORKFLOWS = ["wf1", "wf2", "wf3"]
REQUIREMENTS: list[dict[str, object]] = [{}, {"gpu_memory_gb": 16}, {"gpu_memory_gb": 48}]
WORKERS: dict[str, dict[str, Any]] = {
    "plain": {"hardware": {"gpu_memory_gb": 24}},
    "deny": {"hardware": {"gpu_memory_gb": 24}, "denied_customers": ["a", "b"]},
    "deny-most": {"hardware": {"gpu_memory_gb": 80}, "denied_customers": ["a", "b", "c", "d"]},
    "allow": {"hardware": {"gpu_memory_gb": 24}, "allowed_customers": ["c", "a"]},
    "allow-and-deny": {"allowed_customers": ["c", "a"], "denied_customers": ["a"]},
    "pinned": {"hardware": {"gpu_memory_gb": 80}, "workflow_id": "wf2"},
}


def mixed_jobs(seed: int, count: int) -> list[JobSpec]:
    """Jobs of several customers, some in workflows (a workflow has one customer), in long runs
    of one customer so that the claim's search past denied customers is exercised."""
    rng = random.Random(seed)
    owner = {wf: rng.choice(CUSTOMERS) for wf in WORKFLOWS}
    specs: list[JobSpec] = []
    while len(specs) < count:
        run_customer, run_requirements = rng.choice(CUSTOMERS), rng.choice(REQUIREMENTS)
        for _ in range(rng.choice([1, 3, 12, 30])):
            workflow = rng.choice([*WORKFLOWS, None, None, None])
            specs.append(
                make_spec(
                    priority=rng.choice([10, 50, 50, 90]),
                    requirements=run_requirements,
                    customer_id=owner[workflow] if workflow else run_customer,
                    workflow_id=workflow,
                )
            )
    return specs[:count]


@pytest.mark.parametrize("worker", list(WORKERS))
async def test_drain_order_follows_the_pure_rules(
    queue: Queue, redis: aioredis.Redis, worker: str
) -> None:
    """With fair shares off: priority, then submit order (test_fair_shares.py has the fair
    order of the same mix)."""
    queue = Queue(redis, with_settings(queue.settings, fair_scan=0))
    specs = mixed_jobs(seed=7, count=300)
    ids = await queue.submit_many(specs)
    caps = make_caps(**WORKERS[worker])
    runnable = [
        (int(await redis.hget(queue.keys.job(job_id), "score")), job_id)
        for job_id, spec in zip(ids, specs, strict=True)
        if job_matches(spec.service, spec.requirements, spec.customer_id, spec.workflow_id, caps)
    ]
    expected = [job_id for _, job_id in sorted(runnable)]
    assert expected, "the mix should give every worker something to run"
    assert await drain(queue, WORKERS[worker]) == expected
    assert sum((await queue.depth()).values()) == len(ids) - len(expected)


async def test_claim_on_an_empty_queue_has_no_hint(queue: Queue) -> None:
    result = await queue.claim(make_caps())
    assert (result.claimed, result.retry_in) == (None, None)


async def test_search_past_a_denied_workflow_whose_steps_share_a_score(queue: Queue) -> None:
    """Steps of a workflow tie on score; the search past a denied run counts ties exactly."""
    await queue.submit_many(
        [make_spec(priority=90, workflow_id="wf", customer_id="a", step=i) for i in range(1, 21)]
        + [make_spec(priority=90, customer_id="a") for _ in range(15)]
        + [make_spec(priority=90, customer_id="b") for _ in range(15)]
    )
    wanted = await queue.submit(make_spec(priority=90, customer_id="c"))
    await queue.submit_many([make_spec(priority=90, customer_id="a") for _ in range(10)])
    deny = make_caps(denied_customers=["a", "b"])
    assert await claimed_id(queue, deny) == wanted
    assert await claimed_id(queue, deny) is None


async def test_pinned_worker_with_customer_lists(queue: Queue) -> None:
    steps = await queue.submit_many(
        [make_spec(workflow_id="wf", customer_id="a", step=i) for i in range(1, 21)]
    )
    for refused in (
        {"workflow_id": "wf", "denied_customers": ["a"]},
        {"workflow_id": "wf", "allowed_customers": ["b"]},
        {"workflow_id": "other"},
    ):
        assert await claimed_id(queue, make_caps(**refused)) is None, refused
    pinned = make_caps(workflow_id="wf", allowed_customers=["a"])
    assert await claimed_id(queue, pinned) in steps


async def test_steps_of_one_workflow_pending_together_run_in_step_order(queue: Queue) -> None:
    """Steps share their workflow's priority and age, so their scores tie; the claim takes the
    lowest step first, whatever order they were submitted in and whichever classes they are in
    (the submit order of ids is random: ties used to fall to the id)."""
    caps = {"hardware": {"gpu_memory_gb": 24}}
    before = await queue.submit(make_spec(priority=50))
    steps = [5, 2, 7, 1, 3, 6, 4, 8, 10, 9, 12, 11]
    ids = await queue.submit_many(
        [
            make_spec(
                priority=50, workflow_id="wf-fan", step=step, total_steps=12,
                # Three classes: the tie is broken across classes as within one.
                requirements={"gpu_memory_gb": [8, 16, 24][step % 3]},
            )
            for step in steps
        ]
    )  # fmt: skip
    after = await queue.submit(make_spec(priority=50))
    by_step = dict(zip(steps, ids, strict=True))
    expected = [before] + [by_step[s] for s in sorted(steps)] + [after]
    assert await drain(queue, caps) == expected
