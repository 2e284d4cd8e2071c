"""Rate limits shared by every web process, counted in Redis with the ``limits`` library.

A ``Rule`` is one or more windows written the way ``limits`` reads them, ``"5/minute;10/10
minutes;20/hour"``: each window must allow a request for it to pass. Several windows of growing
length give a growing delay: the sixth failed sign-in of an account within a minute waits out
the minute, the eleventh the ten minutes, the twenty-first the hour. An empty rule is off.

Two ways to use a rule. For failures (sign-in, bearer tokens): ``check`` before the attempt
(refused while any window is full) and ``hit`` after a failure, so successes cost nothing. For
plain rates (submits): ``take`` counts and checks in one step. The counters live under
``Keys.rate_limits()`` on the process's own Redis pool, so every API and studio process shares
them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import Any, Self, cast

from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisClusterStorage, RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from redis.asyncio import Redis

from emp_core.errors import EmpError
from emp_core.queue.keys import Keys


class RateLimited(EmpError):
    """Too many attempts: ``retry_after`` says when the next one may pass (whole seconds)."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, field: str | None = None) -> None:
        super().__init__(f"{message}; try again in {_duration(retry_after)}", field=field)
        self.retry_after = retry_after


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{math.ceil(seconds / 60)} minutes"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    windows: tuple[RateLimitItem, ...]

    @classmethod
    def parse(cls, name: str, text: str) -> Rule:
        return cls(name, tuple(parse_many(text)) if text.strip() else ())


class RuleSet:
    """Base of an app's rate limits: a frozen dataclass whose fields are ``Rule``s. Each field
    is read from the settings attribute ``<field>_limits`` (or the one its ``setting`` metadata
    names) and counted under the field's name with dashes (``signin_account`` →
    ``signin-account``), so renaming a field restarts its counters."""

    @classmethod
    def of(cls, settings: object) -> Self:
        rules = {
            f.name: Rule.parse(
                f.name.replace("_", "-"),
                getattr(settings, f.metadata.get("setting", f"{f.name}_limits")),
            )
            for f in fields(cast(Any, cls))
        }
        return cls(**rules)


def _cluster_uri(url: str) -> tuple[str, dict[str, bool]]:
    """``redis+cluster://[auth@]h1:p1,h2:p2[/...]`` (``rediss+cluster``: TLS) as limits' cluster
    storage reads it, ``async+redis+cluster://[auth@]h1:p1,h2:p2``, and its options. limits'
    plain storage passes the URL to ``Redis.from_url``, which refuses a cluster scheme (the API
    and the studio did not start on a cluster)."""
    scheme, _, rest = url.partition("://")
    seeds = rest.partition("/")[0]
    return f"async+redis+cluster://{seeds}", {"ssl": True} if scheme == "rediss+cluster" else {}


class RateLimiter:
    def __init__(self, redis: Redis, keys: Keys, url: str) -> None:
        pool: Any = getattr(redis, "connection_pool", None)  # a Cluster client has none
        if pool is not None:  # one node: share the process's (waiting) pool
            storage = RedisStorage(
                "async+redis://",  # the connection comes from the pool, not from this URL
                implementation="redispy", key_prefix=keys.rate_limits(), connection_pool=pool,
            )  # fmt: skip
        else:  # a Cluster (redis+cluster://): limits opens its own client of the same nodes
            uri, options = _cluster_uri(url)
            storage = RedisClusterStorage(
                uri, implementation="redispy", key_prefix=keys.rate_limits(), **options
            )
        self._moving = MovingWindowRateLimiter(storage)
        self._fixed = FixedWindowRateLimiter(storage)

    async def check(self, rule: Rule, *ids: str, message: str, field: str | None = None) -> None:
        """Raise ``RateLimited`` while any window of ``rule`` is full for ``ids``."""
        for window in rule.windows:
            if not await self._moving.test(window, rule.name, *ids):
                stats = await self._moving.get_window_stats(window, rule.name, *ids)
                wait = max(1, math.ceil(stats.reset_time - time.time()))
                raise RateLimited(message, retry_after=wait, field=field)

    async def hit(self, rule: Rule, *ids: str) -> None:
        """Count one failure against every window of ``rule``."""
        for window in rule.windows:
            await self._moving.hit(window, rule.name, *ids)

    async def clear(self, rule: Rule, *ids: str) -> None:
        for window in rule.windows:
            await self._moving.clear(window, rule.name, *ids)

    async def take(self, rule: Rule, *ids: str, message: str) -> None:
        """Count one request (fixed windows: one cheap round trip); ``RateLimited`` past it."""
        for window in rule.windows:
            if not await self._fixed.hit(window, rule.name, *ids):
                stats = await self._fixed.get_window_stats(window, rule.name, *ids)
                wait = max(1, math.ceil(stats.reset_time - time.time()))
                raise RateLimited(message, retry_after=wait)
