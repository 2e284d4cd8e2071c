"""The worker's LoRA cache against a real HTTP server on a free port: downloads, hashes, LRU and
TTL eviction, pinning, one download per hash, interrupted downloads, restarts, damaged files.

Time is a fake clock the test moves (for LRU order and TTL), never the wall clock."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from emp_core.jobs.loras import LoraRef
from emp_core.loras.cache import LoraCache
from emp_core.loras.download import LoraDownloadFailed, LoraFetchError, LoraMismatch

SIZE = 1000


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds


def publish(server: Any, name: str, size: int = SIZE, *, scope: str = "user") -> LoraRef:
    """Put random bytes on the server and return the job's reference to them."""
    data = os.urandom(size)
    sha = hashlib.sha256(data).hexdigest()
    server.files[f"/b/{sha}"] = data
    return LoraRef(
        id=f"id-{name}", name=f"{name}.safetensors", sha256=sha, size=size, scope=scope,  # type: ignore[arg-type]
        url=server.url(f"/b/{sha}?sig=x"),
    )  # fmt: skip


def hits(server: Any, ref: LoraRef) -> int:
    return int(server.hits.get(f"/b/{ref.sha256}", 0))


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def open_cache(root: Path, clock: Clock, **kw: Any) -> LoraCache:
    cache = LoraCache(root, clock=clock, **kw)
    await cache.open()
    return cache


async def use(cache: LoraCache, *refs: LoraRef) -> dict[str, Path]:
    async with cache.use(refs) as paths:
        return paths


async def test_downloads_once_then_serves_from_disk_with_progress(
    tmp_path: Path, file_server: Any, clock: Clock
) -> None:
    cache = await open_cache(tmp_path, clock)
    ref = publish(file_server, "my-style", size=4 * 2**20 + 17)
    messages: list[str] = []

    async def progress(message: str) -> None:
        messages.append(message)

    async with cache.use([ref], progress) as paths:
        assert paths[ref.sha256].read_bytes() == file_server.files[f"/b/{ref.sha256}"]
    assert len(messages) >= 3
    assert all(re.fullmatch(r"downloading my-style\.safetensors \d+%", m) for m in messages)
    assert messages[-1] == "downloading my-style.safetensors 100%"
    await use(cache, ref)
    assert hits(file_server, ref) == 1
    assert (cache.stats.downloads, cache.stats.hits) == (1, 1)
    assert cache.held() == [ref.sha256]
    await cache.close()


async def test_least_recently_used_goes_first(
    tmp_path: Path, file_server: Any, clock: Clock
) -> None:
    cache = await open_cache(tmp_path, clock, budget_bytes=3 * SIZE)
    a, b, c, d = (publish(file_server, n) for n in "abcd")
    for ref in (a, b, c, a):  # a used last: b is now the least recently used
        await use(cache, ref)
        clock.tick()
    await use(cache, d)
    assert set(cache.held()) == {a.sha256, c.sha256, d.sha256}
    assert not cache.path(b.sha256).exists()
    assert cache.held() == [d.sha256, a.sha256, c.sha256]  # most recent first
    assert cache.total_bytes == 3 * SIZE
    await cache.close()


async def test_files_unused_past_the_ttl_are_evicted(
    tmp_path: Path, file_server: Any, clock: Clock
) -> None:
    cache = await open_cache(tmp_path, clock, ttl_s=100)
    old, recent, other = (publish(file_server, n) for n in ("old", "recent", "other"))
    await use(cache, old)
    clock.tick(60)
    await use(cache, recent)
    clock.tick(60)  # old: 120 s unused, recent: 60 s
    await use(cache, other)
    assert set(cache.held()) == {recent.sha256, other.sha256}
    assert not cache.path(old.sha256).exists()
    await cache.close()


async def test_files_of_a_running_job_are_never_evicted(
    tmp_path: Path, file_server: Any, clock: Clock
) -> None:
    cache = await open_cache(tmp_path, clock, budget_bytes=2 * SIZE, ttl_s=100)
    pinned, b, c = (publish(file_server, n) for n in ("pinned", "b", "c"))
    async with cache.use([pinned]) as paths:
        clock.tick(1000)  # past the TTL too
        await use(cache, b)
        clock.tick()
        await use(cache, c)  # the budget needs one to go: b, never the pinned one
        assert paths[pinned.sha256].exists()
        assert set(cache.held()) == {pinned.sha256, c.sha256}
        assert cache.pinned(pinned.sha256)
    assert not cache.pinned(pinned.sha256)
    await cache.close()


async def test_a_cache_full_of_pinned_files_runs_over_budget_rather_than_evict_them(
    tmp_path: Path, file_server: Any, clock: Clock
) -> None:
    cache = await open_cache(tmp_path, clock, budget_bytes=SIZE)
    a, b = publish(file_server, "a"), publish(file_server, "b")
    async with cache.use([a]):
        async with cache.use([b]):
            assert set(cache.held()) == {a.sha256, b.sha256}
        clock.tick()
    # Released: back within budget, the least recently used (b, released first) gone.
    assert cache.held() == [a.sha256]
    await cache.close()


async def test_one_download_per_hash_however_many_slots_want_it(
    tmp_path: Path, file_server: Any, clock: Clock
) -> None:
    cache = await open_cache(tmp_path, clock)
    ref = publish(file_server, "shared", size=64 * 1024)
    file_server.gate = threading.Event()
    seen: dict[int, list[str]] = {i: [] for i in range(5)}

    async def slot(i: int) -> Path:
        async def progress(message: str) -> None:
            seen[i].append(message)

        async with cache.use([ref], progress) as paths:
            return paths[ref.sha256]

    tasks = [asyncio.create_task(slot(i)) for i in range(5)]
    await asyncio.to_thread(file_server.started.wait, 10)
    await asyncio.sleep(0)  # let every slot join the download in flight
    file_server.gate.set()
    paths = await asyncio.gather(*tasks)
    assert len(set(paths)) == 1
    assert hits(file_server, ref) == 1
    assert cache.stats.downloads == 1
    assert all(messages[-1].endswith("100%") for messages in seen.values())
    await cache.close()


async def test_a_download_stopped_half_way_leaves_no_file_that_passes_as_good(
    tmp_path: Path, file_server: Any, clock: Clock
) -> None:
    cache = await open_cache(tmp_path, clock)
    ref = publish(file_server, "big", size=256 * 1024)
    file_server.gate = threading.Event()
    task = asyncio.create_task(use(cache, ref))
    await asyncio.to_thread(file_server.started.wait, 10)
    # Half the bytes are on their way: the worker shuts down (its downloads are cancelled).
    await cache.close()
    with pytest.raises(asyncio.CancelledError):
        await task
    file_server.gate.set()
    assert not cache.path(ref.sha256).exists()
    assert ref.sha256 not in cache
    # A crashed process's leftovers: a partial download in tmp/ and a truncated file in blobs/.
    data = file_server.files[f"/b/{ref.sha256}"]
    (cache.tmp / f"{ref.sha256}.123.part").write_bytes(data[: len(data) // 2])
    cache.path(ref.sha256).write_bytes(data[: len(data) // 2])

    file_server.gate = None
    again = await open_cache(tmp_path, clock)
    assert list(again.tmp.iterdir()) == []
    paths = await use(again, ref)
    assert paths[ref.sha256].read_bytes() == data
    assert again.stats.refetched == 1
    await again.close()


async def test_a_connection_cut_mid_file_fails_retryably_and_keeps_nothing(
    tmp_path: Path, file_server: Any, clock: Clock
) -> None:
    cache = await open_cache(tmp_path, clock)
    ref = publish(file_server, "cut", size=100_000)
    file_server.cut[f"/b/{ref.sha256}"] = 40_000
    with pytest.raises(LoraDownloadFailed, match=r"cut\.safetensors") as info:
        await use(cache, ref)
    assert info.value.retryable
    assert list(cache.blobs.iterdir()) == []
    assert list(cache.tmp.iterdir()) == []
    del file_server.cut[f"/b/{ref.sha256}"]
    await use(cache, ref)
    assert ref.sha256 in cache
    await cache.close()


async def test_a_restart_keeps_the_index_and_the_lru_order(
    tmp_path: Path, file_server: Any, clock: Clock
) -> None:
    cache = await open_cache(tmp_path, clock, budget_bytes=3 * SIZE)
    a, b, c, d = (publish(file_server, n) for n in "abcd")
    for ref in (a, b, c, a):
        await use(cache, ref)
        clock.tick()
    before = cache.held()
    await cache.close()

    again = await open_cache(tmp_path, clock, budget_bytes=3 * SIZE)
    assert again.held() == before
    await use(again, d)  # b is still the least recently used
    assert set(again.held()) == {a.sha256, c.sha256, d.sha256}
    assert hits(file_server, a) == hits(file_server, c) == 1
    await use(again, a)  # verified by its hash once, not downloaded
    assert hits(file_server, a) == 1
    await again.close()


async def test_damaged_or_missing_files_are_fetched_again(
    tmp_path: Path, file_server: Any, clock: Clock
) -> None:
    cache = await open_cache(tmp_path, clock)
    damaged, missing, quiet = (publish(file_server, n) for n in ("damaged", "missing", "quiet"))
    await use(cache, damaged, missing, quiet)
    cache.path(damaged.sha256).write_bytes(b"x" * SIZE)  # same size, new mtime
    cache.path(missing.sha256).unlink()
    paths = await use(cache, damaged, missing)
    assert paths[damaged.sha256].read_bytes() == file_server.files[f"/b/{damaged.sha256}"]
    assert hits(file_server, damaged) == hits(file_server, missing) == 2
    await cache.close()

    # Damage that keeps size and modification time is caught by the hash check after a restart.
    st = cache.path(quiet.sha256).stat()
    cache.path(quiet.sha256).write_bytes(b"y" * SIZE)
    os.utime(cache.path(quiet.sha256), ns=(st.st_atime_ns, st.st_mtime_ns))
    again = await open_cache(tmp_path, clock)
    paths = await use(again, quiet)
    assert paths[quiet.sha256].read_bytes() == file_server.files[f"/b/{quiet.sha256}"]
    assert hits(file_server, quiet) == 2
    await again.close()


async def test_a_deleted_lora_fails_with_a_clear_final_message(
    tmp_path: Path, file_server: Any, clock: Clock
) -> None:
    cache = await open_cache(tmp_path, clock)
    ref = publish(file_server, "gone")
    del file_server.files[f"/b/{ref.sha256}"]
    with pytest.raises(LoraFetchError) as info:
        await use(cache, ref)
    assert not info.value.retryable
    assert "gone.safetensors" in info.value.message
    assert "no longer available (HTTP 404)" in info.value.message
    assert list(cache.blobs.iterdir()) == []
    await cache.close()


async def test_bytes_that_do_not_match_the_hash_are_refused(
    tmp_path: Path, file_server: Any, clock: Clock
) -> None:
    cache = await open_cache(tmp_path, clock)
    ref = publish(file_server, "swapped")
    file_server.files[f"/b/{ref.sha256}"] = os.urandom(SIZE)
    with pytest.raises(LoraMismatch, match="does not match its recorded sha256"):
        await use(cache, ref)
    assert ref.sha256 not in cache
    assert list(cache.blobs.iterdir()) == []
    await cache.close()
