"""The health probe both web apps answer ``/health`` with: Redis and SQL, each within a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from emp_sql.session import Database

TIMEOUT_SECONDS = 2.0


async def check(probe: Awaitable[Any]) -> str:
    """``"ok"``, or one line saying why the probe failed."""
    try:
        await asyncio.wait_for(probe, TIMEOUT_SECONDS)
    except TimeoutError:
        return f"no answer within {TIMEOUT_SECONDS:g} s"
    except (RedisError, SQLAlchemyError, OSError) as exc:
        return str(exc).splitlines()[0][:200] or type(exc).__name__
    return "ok"


async def probe_backends(redis: Redis, database: Database) -> dict[str, str]:
    """Each backend's state, probed at once: ``{"redis": "ok", "sql": "..."}``."""
    redis_state, sql_state = await asyncio.gather(check(redis.ping()), check(database.ping()))
    return {"redis": redis_state, "sql": sql_state}
