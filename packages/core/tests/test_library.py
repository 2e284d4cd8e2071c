"""Loading the Function library and checking its version. The library is global to a Redis
server, so these tests use a server of their own."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from emp_core.errors import LibraryMismatch
from emp_core.queue.functions import LIBRARY_SOURCE, LIBRARY_VERSION, Functions
from emp_core.queue.keys import Keys

NAMES = {
    "emp_version", "emp_submit", "emp_claim", "emp_heartbeat", "emp_progress", "emp_complete",
    "emp_fail", "emp_release", "emp_cancel", "emp_reap", "emp_rest", "emp_retry", "emp_requeue",
}  # fmt: skip


def with_version(version: int) -> str:
    old = f"local VERSION = '{LIBRARY_VERSION}'"
    assert old in LIBRARY_SOURCE
    return LIBRARY_SOURCE.replace(old, f"local VERSION = '{version}'")


async def library_functions(redis: aioredis.Redis) -> set[str]:
    libraries = await redis.function_list(library="emp")
    if not libraries:
        return set()
    (library,) = libraries
    info = dict(zip(library[::2], library[1::2], strict=True))
    return {
        dict(zip(fn[::2], fn[1::2], strict=True))[b"name"].decode() for fn in info[b"functions"]
    }


async def test_load_on_an_empty_redis(private_redis: aioredis.Redis) -> None:
    functions = Functions(private_redis, Keys(queue="lib"))
    assert await functions.installed_version() is None
    assert await functions.load() == LIBRARY_VERSION
    assert await functions.installed_version() == LIBRARY_VERSION
    await functions.check()
    assert await library_functions(private_redis) == NAMES


async def test_load_twice_is_harmless(private_redis: aioredis.Redis) -> None:
    functions = Functions(private_redis, Keys(queue="lib"))
    await functions.load()
    await functions.load()
    await functions.check()


async def test_a_second_load_of_the_same_code_compiles_nothing(
    private_redis: aioredis.Redis,
) -> None:
    """Workers load the library at every start; Redis compiles it only when it differs."""
    functions = Functions(private_redis, Keys(queue="lib"))
    await functions.load()
    await private_redis.config_resetstat()
    await functions.load()
    assert "cmdstat_function|load" not in await private_redis.info("commandstats")
    # The same version with other code (an edit without a version bump) is loaded again.
    await private_redis.function_load(LIBRARY_SOURCE + "\n-- edited\n", replace=True)
    await private_redis.config_resetstat()
    await functions.load()
    stats = await private_redis.info("commandstats")
    assert stats["cmdstat_function|load"]["calls"] == 1
    await functions.check()


async def test_an_older_library_is_replaced(private_redis: aioredis.Redis) -> None:
    await private_redis.function_load(with_version(LIBRARY_VERSION - 1))
    functions = Functions(private_redis, Keys(queue="lib"))
    with pytest.raises(LibraryMismatch):
        await functions.check()
    assert await functions.load() == LIBRARY_VERSION
    await functions.check()


async def test_a_newer_library_is_refused_and_kept(private_redis: aioredis.Redis) -> None:
    newer = LIBRARY_VERSION + 1
    await private_redis.function_load(with_version(newer))
    functions = Functions(private_redis, Keys(queue="lib"))
    with pytest.raises(LibraryMismatch) as info:
        await functions.load()
    assert f"v{newer}" in info.value.message
    assert info.value.status_code == 500
    # Not downgraded: the newer deploy keeps running.
    assert await functions.installed_version() == newer
    with pytest.raises(LibraryMismatch):
        await functions.check()


async def test_check_without_the_library(private_redis: aioredis.Redis) -> None:
    functions = Functions(private_redis, Keys(queue="lib"))
    with pytest.raises(LibraryMismatch) as info:
        await functions.check()
    assert "no emp library" in info.value.message


def test_library_source_declares_its_name_and_version() -> None:
    assert LIBRARY_SOURCE.startswith("#!lua name=emp\n")
    assert LIBRARY_VERSION >= 1
