"""Fair shares between customers within a priority (issue 10, item 5).

A customer with a backlog gets every claim while nobody else waits; a customer that has been
served less goes first; weights scale the shares; priority still wins; a claim's commands do not
depend on the number of customers or jobs. The drain order of a random mix is checked against a
pure model of the rule (start-time fair queueing charged per job, ties to the oldest head).
"""

from __future__ import annotations

from collections import Counter

import pytest
import redis.asyncio as aioredis
from core_factories import claim_one, claimed_id, make_caps, make_spec, with_settings
from test_claim_index import commands
from test_claim_order import WORKERS, mixed_jobs

from emp_core.errors import InvalidInput
from emp_core.jobs.job import JobSpec
from emp_core.jobs.matching import job_matches
from emp_core.queue.fairness import FairShares
from emp_core.queue.queue import Queue
from emp_core.settings import QueueSettings

SPAN = 2**42


async def test_a_burst_does_not_starve_another_customer(queue: Queue) -> None:
    caps = make_caps()
    await queue.submit_many([make_spec(customer_id="a") for _ in range(50)])
    for _ in range(3):
        assert (await claim_one(queue, caps)).job.customer_id == "a"
    b = await queue.submit(make_spec(customer_id="b"))
    assert await claimed_id(queue, caps) == b  # next, not after a's 47 others
    assert (await claim_one(queue, caps)).job.customer_id == "a"


async def test_a_lone_customer_gets_every_claim_in_submit_order(queue: Queue) -> None:
    ids = await queue.submit_many([make_spec(customer_id="a") for _ in range(20)])
    caps = make_caps()
    assert [await claimed_id(queue, caps) for _ in range(20)] == ids
    assert await claimed_id(queue, caps) is None


async def test_two_backlogs_alternate_and_the_older_head_breaks_ties(queue: Queue) -> None:
    a = await queue.submit_many([make_spec(customer_id="a") for _ in range(4)])
    b = await queue.submit_many([make_spec(customer_id="b") for _ in range(4)])
    got = [await claimed_id(queue, make_caps()) for _ in range(8)]
    assert got == [a[0], b[0], a[1], b[1], a[2], b[2], a[3], b[3]]


async def test_weights_scale_the_shares(queue: Queue) -> None:
    await FairShares(queue.redis, queue.keys).set_weight("a", 3)
    await queue.submit_many([make_spec(customer_id=c) for c in ("a", "b") for _ in range(40)])
    caps = make_caps()
    served = Counter([(await claim_one(queue, caps)).job.customer_id for _ in range(40)])
    assert served == {"a": 30, "b": 10}


async def test_priority_wins_over_fairness(queue: Queue) -> None:
    caps = make_caps()
    await queue.submit_many([make_spec(customer_id="a", priority=90) for _ in range(5)])
    await claim_one(queue, caps)
    low = await queue.submit(make_spec(customer_id="b", priority=50))
    # a has used its share, b none: a's higher priority still goes first.
    assert [(await claim_one(queue, caps)).job.customer_id for _ in range(4)] == ["a"] * 4
    assert await claimed_id(queue, caps) == low


async def test_a_customer_that_was_away_banks_no_credit(queue: Queue) -> None:
    caps = make_caps()
    await queue.submit_many([make_spec(customer_id="a") for _ in range(30)])
    for _ in range(20):
        await claim_one(queue, caps)
    await queue.submit_many([make_spec(customer_id="b") for _ in range(10)])
    got = [(await claim_one(queue, caps)).job.customer_id for _ in range(10)]
    # b goes first and then takes turns with a; it does not get 20 claims in a row.
    assert got == ["b", "a"] * 5


async def test_fairness_holds_across_classes(queue: Queue) -> None:
    big = make_caps(hardware={"gpu_memory_gb": 24})
    await queue.submit_many([make_spec(customer_id="a") for _ in range(30)])
    await claim_one(queue, big)
    b = await queue.submit(make_spec(customer_id="b", requirements={"gpu_memory_gb": 16}))
    assert await claimed_id(queue, big) == b


async def test_the_held_back_head_of_a_retry_goes_to_another_worker(queue: Queue) -> None:
    w1, w2 = make_caps(worker_id="w1"), make_caps(worker_id="w2")
    await queue.submit_many([make_spec(customer_id="a") for _ in range(10)])
    await claim_one(queue, w1)
    b = await queue.submit(make_spec(customer_id="b"))
    held = await claim_one(queue, w1)
    assert held.id == b
    await queue.fail(held, "boom", delay_s=0)
    # w1 failed b's job: it is left to another worker for the grace period, a's next for w1.
    assert (await claim_one(queue, w1)).job.customer_id == "a"
    assert await claimed_id(queue, w2) == b


async def test_deny_and_allow_lists_filter_the_customers_compared(queue: Queue) -> None:
    await queue.submit_many([make_spec(customer_id="a") for _ in range(10)])
    await claim_one(queue, make_caps())
    c = await queue.submit(make_spec(customer_id="c"))
    denies_c = make_caps(worker_id="d", denied_customers=["c"])
    assert (await claim_one(queue, denies_c)).job.customer_id == "a"
    allows_a = make_caps(worker_id="e", allowed_customers=["a"])
    assert (await claim_one(queue, allows_a)).job.customer_id == "a"
    assert await claimed_id(queue, make_caps()) == c


async def test_fairness_off_is_first_submitted_first(queue: Queue) -> None:
    fifo = Queue(queue.redis, with_settings(queue.settings, fair_scan=0))
    a = await fifo.submit_many([make_spec(customer_id="a") for _ in range(5)])
    b = await fifo.submit(make_spec(customer_id="b"))
    assert [await claimed_id(fifo, make_caps()) for _ in range(6)] == [*a, b]


async def test_weights_are_checked(queue: Queue) -> None:
    shares = FairShares(queue.redis, queue.keys)
    refused = [("a", 0.0, "weight"), ("a", float("nan"), "weight"), ("a", 5000.0, "weight"),
               ("bad id", 1.0, "customer_id")]  # fmt: skip
    for customer, weight, field in refused:
        with pytest.raises(InvalidInput) as info:
            await shares.set_weight(customer, weight)
        assert info.value.field == field
    await shares.set_weight("a", 2.5)
    assert await shares.weights() == {"a": 2.5}
    assert await shares.reset_weight("a")
    assert await shares.weights() == {}


async def test_a_weight_stored_by_hand_cannot_break_a_claim(queue: Queue) -> None:
    await queue.redis.hset(queue.keys.fair_weights(), mapping={"a": "nonsense", "b": "-3"})
    await queue.submit_many([make_spec(customer_id=c) for c in ("a", "b") for _ in range(3)])
    assert len([await claimed_id(queue, make_caps()) for _ in range(6)]) == 6


async def test_shares_report_who_is_ahead(queue: Queue) -> None:
    await queue.submit_many([make_spec(customer_id="a") for _ in range(3)])
    for _ in range(3):
        await claim_one(queue, make_caps())
    (share,) = await FairShares(queue.redis, queue.keys).shares("simulation")
    assert (share.customer_id, share.weight, share.ahead) == ("a", 1.0, 1.0)


# --- the drain order against a pure model of the rule ------------------------------------------


def fair_model(jobs: list[tuple[int, str, str]]) -> list[str]:
    """Claim order of (score, id, customer) jobs a worker can all run: the best priority first;
    within it the customer with the lowest start tag max(F, V); ties to the oldest head; taking
    a job sets F = start + 1 and V = max(V, start)."""
    pending = sorted(jobs)
    finish: dict[str, float] = {}
    clock = 0.0
    order = []
    while pending:
        best = pending[0]
        band = best[0] // SPAN
        heads: dict[str, tuple[int, str, str]] = {}
        for job in pending:
            if job[0] // SPAN == band:
                heads.setdefault(job[2], job)
        start = {c: max(finish.get(c, clock), clock) for c in heads}
        low = min(start.values())
        pick = min(heads[c] for c in heads if start[c] == low)
        finish[pick[2]] = start[pick[2]] + 1
        clock = max(clock, start[pick[2]])
        pending.remove(pick)
        order.append(pick[1])
    return order


def one_class(specs: list[JobSpec]) -> list[JobSpec]:
    """The mix in one requirement class, so that every customer is within the claim's bound."""
    return [s.model_copy(update={"requirements": make_spec().requirements}) for s in specs]


@pytest.mark.parametrize("worker", ["plain", "deny", "allow", "pinned"])
@pytest.mark.parametrize("seed", [7, 11])
async def test_drain_order_follows_the_fair_model(
    queue: Queue, redis: aioredis.Redis, worker: str, seed: int
) -> None:
    specs = one_class(mixed_jobs(seed=seed, count=200))
    ids = await queue.submit_many(specs)
    caps = make_caps(**WORKERS[worker])
    runnable = [
        (int(await redis.hget(queue.keys.job(job_id), "score")), job_id, spec.customer_id or "")
        for job_id, spec in zip(ids, specs, strict=True)
        if job_matches(spec.service, spec.requirements, spec.customer_id, spec.workflow_id, caps)
    ]
    # A worker pinned to a workflow serves one customer: first submitted first.
    expected = [j for _, j, _ in sorted(runnable)] if worker == "pinned" else fair_model(runnable)
    got = []
    while (job_id := await claimed_id(queue, caps)) is not None:
        got.append(job_id)
    assert got == expected
    assert len({c for _, _, c in runnable}) > 1 or worker == "pinned"


# --- bounded work ---------------------------------------------------------------------------


async def queue_with_customers(
    redis: aioredis.Redis, settings: QueueSettings, customers: int, jobs_each: int
) -> Queue:
    queue = Queue(redis, settings.model_copy(update={"queue": f"fair{customers}x{jobs_each}"}))
    await queue.functions.load()
    specs = [make_spec(customer_id=f"c{i}") for i in range(customers) for _ in range(jobs_each)]
    for i in range(0, len(specs), 1000):
        await queue.submit_many(specs[i : i + 1000])
    return queue


async def fair_claim_cost(redis: aioredis.Redis, queue: Queue) -> list[int]:
    """Commands of five claims in a row once every customer has been served once (the raises of
    the index's lower bounds are spread over the claims; their sum is bounded)."""
    caps = make_caps()
    while (await redis.zcard(queue.keys.fair_tags("simulation"))) < 3:
        await claim_one(queue, caps)
    costs = []
    for _ in range(5):
        result, cost = await commands(redis, queue.claim(caps))
        assert result.claimed is not None
        costs.append(cost)
    return costs


@pytest.mark.parametrize(("few", "many"), [((20, 1), (10_000, 1)), ((20, 5), (20, 500))])
async def test_claim_commands_do_not_grow_with_customers_or_jobs(
    private_redis: aioredis.Redis,
    settings: QueueSettings,
    few: tuple[int, int],
    many: tuple[int, int],
) -> None:
    """(customers, jobs each): a claim issues the same commands at 20 and at 10,000 customers,
    and at 5 and at 500 jobs per customer."""
    small = await fair_claim_cost(
        private_redis, await queue_with_customers(private_redis, settings, *few)
    )
    large = await fair_claim_cost(
        private_redis, await queue_with_customers(private_redis, settings, *many)
    )
    print(f"\nfair claim commands: {few} customers x jobs {small}, {many} {large}")
    assert large == small
    assert max(large) <= 60
