"""Fair shares between customers: the weights operators set, and the shares used.

The claim (``fair_choice`` in ``lua/emp.lua``) does the scheduling: within a priority, the customer
that has used the least of its share goes next, by start-time fair queueing charged per job. This
module is the operators' side of it: a customer's weight (its share relative to others; default
1, so equal shares) lives in the queue's ``fair_weights`` hash, which the Lua reads when it charges
a claimed job. A new weight counts from the next claim on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from emp_core.errors import InvalidInput
from emp_core.jobs.capabilities import is_identifier
from emp_core.queue.keys import Keys
from emp_core.redis import text

WEIGHT_MIN = 0.01
WEIGHT_MAX = 1000.0
DEFAULT_WEIGHT = 1.0
# The member of a service's tags that holds its virtual clock (lua/emp.lua FAIR_CLOCK).
CLOCK = "~clock"


def check_weight(customer_id: str, weight: float) -> float:
    """The weight, or ``InvalidInput`` naming the field: a customer id as jobs carry it and a
    finite weight from ``WEIGHT_MIN`` to ``WEIGHT_MAX``."""
    if not is_identifier(customer_id):
        raise InvalidInput(f"{customer_id!r} is not a customer id", field="customer_id")
    if not math.isfinite(weight) or not WEIGHT_MIN <= weight <= WEIGHT_MAX:
        raise InvalidInput(
            f"weight must be a number from {WEIGHT_MIN} to {WEIGHT_MAX:g}, got {weight}",
            field="weight",
        )
    return float(weight)


@dataclass(frozen=True, slots=True)
class Share:
    """One customer's standing in a service: its weight and how far its finish tag is ahead of
    the service's clock (jobs' worth of share used beyond its turn; 0 when it is not ahead)."""

    customer_id: str
    weight: float
    ahead: float


class FairShares:
    """The weights of one queue's customers."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def set_weight(self, customer_id: str, weight: float) -> None:
        """Give ``customer_id`` a share of ``weight`` (relative to others'; default 1)."""
        checked = check_weight(customer_id, weight)
        await self.redis.hset(self.keys.fair_weights(), customer_id, repr(checked))

    async def reset_weight(self, customer_id: str) -> bool:
        """Back to the default weight; False when the customer had none set."""
        return bool(await self.redis.hdel(self.keys.fair_weights(), customer_id))

    async def weights(self) -> dict[str, float]:
        """The weights set, by customer (customers not listed have ``DEFAULT_WEIGHT``)."""
        raw = await self.redis.hgetall(self.keys.fair_weights())
        return {text(k): float(v) for k, v in raw.items()}

    async def shares(self, service: str) -> list[Share]:
        """The customers of ``service`` served ahead of its clock, most ahead first."""
        tags: Any = await self.redis.zrange(self.keys.fair_tags(service), 0, -1, withscores=True)
        by_name = {text(member): float(score) for member, score in tags}
        clock = by_name.pop(CLOCK, 0.0)
        weights = await self.weights()
        out = [
            Share(c, weights.get(c, DEFAULT_WEIGHT), max(0.0, tag - clock))
            for c, tag in by_name.items()
        ]
        return sorted(out, key=lambda s: (-s.ahead, s.customer_id))
