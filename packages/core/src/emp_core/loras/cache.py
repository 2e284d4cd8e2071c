"""The worker's LoRA cache (ADR-010): a content-addressed folder of the LoRA files its jobs use.

- ``<root>/blobs/<sha256>`` holds a file only once it was downloaded whole and its sha256 checked:
  a download streams into ``<root>/tmp/`` and is renamed into place, so a download cut off half-way
  (or a worker killed during one) never leaves a file that passes as good; ``open`` empties tmp/.
- Downloads are just in time, after the claim, and deduplicated: however many slots want one hash
  at once, one download runs and they all wait for it (each seeing its progress).
- Least recently used files go first when the byte budget (50 GB by default) would be exceeded,
  and any file unused for longer than the TTL (7 days) goes at the next use of the cache. Files
  pinned by a running job are never evicted (the cache may then run over budget until they are
  released).
- The index (``index.py``) survives a restart. A file whose size or modification time no longer
  matches the index, or which fails the hash check that the first use after a restart makes, is
  fetched again.

One cache per worker process: two processes must not share a folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from emp_core.jobs.loras import LoraRef
from emp_core.loras.download import download, file_sha256, new_client
from emp_core.loras.index import CacheIndex, Entry

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

DEFAULT_BUDGET_BYTES = 50 * 10**9
DEFAULT_TTL_SECONDS = 7 * 24 * 3600.0
# How many held hashes a worker advertises to the claim (most recently used first).
ADVERTISE_LIMIT = 512
# A download reports its progress in steps of this many percent.
PROGRESS_STEP = 10

# Called with a message for people, e.g. "downloading my-style.safetensors 40%".
ProgressFn = Callable[[str], Awaitable[None]]


@dataclass
class CacheStats:
    hits: int = 0
    downloads: int = 0
    bytes_downloaded: int = 0
    evictions: int = 0
    refetched: int = 0  # files found damaged or missing and fetched again


@dataclass(eq=False)
class _Fetch:
    """One download in flight, and whom to tell about its progress."""

    task: asyncio.Task[Path] | None = None
    listeners: list[ProgressFn] = field(default_factory=list)
    reported: int = -1


class LoraCache:
    """A content-addressed LoRA cache in ``root``; ``await open()`` before use."""

    def __init__(
        self,
        root: Path,
        *,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        ttl_s: float = DEFAULT_TTL_SECONDS,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.tmp = self.root / "tmp"
        self.budget_bytes = budget_bytes
        self.ttl_s = ttl_s
        self.clock = clock
        self.stats = CacheStats()
        # Set whenever the set of held files changes, so the worker can advertise it again.
        self.changed = asyncio.Event()
        self._index = CacheIndex(self.root)
        self._own_client = client is None
        self._client = client
        self._pins: dict[str, int] = {}
        self._fetches: dict[str, _Fetch] = {}

    # --- lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():  # downloads a previous process did not finish
            with contextlib.suppress(OSError):
                leftover.unlink()
        self._index.load(self.blobs)
        self.sweep()
        self._index.save()
        self.changed.set()

    async def close(self) -> None:
        for fetch in list(self._fetches.values()):
            if fetch.task is not None:
                fetch.task.cancel()
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- what it holds ---------------------------------------------------------------------------
    def path(self, sha256: str) -> Path:
        return self.blobs / sha256

    def held(self, limit: int = ADVERTISE_LIMIT) -> list[str]:
        """The hashes held, most recently used first, at most ``limit``."""
        entries = self._index.entries
        return sorted(entries, key=lambda sha: entries[sha].last_used, reverse=True)[:limit]

    def __contains__(self, sha256: str) -> bool:
        return sha256 in self._index.entries

    @property
    def total_bytes(self) -> int:
        return self._index.total_bytes

    def pinned(self, sha256: str) -> bool:
        return self._pins.get(sha256, 0) > 0

    # --- using files -----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def use(
        self, refs: Sequence[LoraRef], progress: ProgressFn | None = None
    ) -> AsyncIterator[dict[str, Path]]:
        """Pin ``refs``, fetch those not held, and yield their local paths by sha256; unpinned
        on exit. Raises ``LoraFetchError`` when one cannot be fetched."""
        hashes = [ref.sha256 for ref in refs]
        for sha in hashes:
            self._pins[sha] = self._pins.get(sha, 0) + 1
        try:
            self.sweep()
            paths = {ref.sha256: await self._ensure(ref, progress) for ref in refs}
            yield paths
        finally:
            now = self.clock()
            for sha in hashes:
                left = self._pins[sha] - 1
                if left:
                    self._pins[sha] = left
                else:
                    del self._pins[sha]
                if (entry := self._index.entries.get(sha)) is not None:
                    entry.last_used = now
            self._make_room(0)
            self._save()

    async def _ensure(self, ref: LoraRef, progress: ProgressFn | None) -> Path:
        sha = ref.sha256
        entry = self._index.entries.get(sha)
        fetch = self._fetches.get(sha)
        if fetch is None and entry is not None and entry.verified and self._intact(sha, entry):
            self.stats.hits += 1
            entry.last_used = self.clock()
            return self.path(sha)
        if fetch is None:
            fetch = self._fetches[sha] = _Fetch()
            fetch.task = asyncio.create_task(self._obtain(ref, fetch), name=f"lora-{sha[:12]}")
            fetch.task.add_done_callback(lambda _t: self._fetches.pop(sha, None))
        if progress is not None:
            fetch.listeners.append(progress)
        try:
            assert fetch.task is not None
            # Shielded: one waiter giving up (its job cancelled) does not stop the others' file.
            return await asyncio.shield(fetch.task)
        finally:
            if progress is not None:
                with contextlib.suppress(ValueError):
                    fetch.listeners.remove(progress)

    async def _obtain(self, ref: LoraRef, fetch: _Fetch) -> Path:
        """Verify a file read from a previous run, or download it."""
        sha = ref.sha256
        entry = self._index.entries.get(sha)
        if entry is not None:
            if (
                self._intact(sha, entry)
                and await asyncio.to_thread(file_sha256, self.path(sha)) == sha
            ):
                entry.verified = True
                entry.last_used = self.clock()
                self.stats.hits += 1
                return self.path(sha)
            logger.warning(
                "LoRA cache: %s (%s) is damaged or missing; fetching it again", ref.name, sha
            )
            self.stats.refetched += 1
            self._drop(sha)
        return await self._download(ref, fetch)

    async def _download(self, ref: LoraRef, fetch: _Fetch) -> Path:
        sha = ref.sha256
        if self._client is None:
            self._client = new_client()
        self._make_room(ref.size)
        tmp = self.tmp / f"{sha}.{os.getpid()}.{id(fetch):x}.part"

        async def on_bytes(received: int, total: int) -> None:
            pct = received * 100 // total
            step = pct - pct % PROGRESS_STEP
            if step > fetch.reported:
                fetch.reported = step
                for listener in list(fetch.listeners):
                    await listener(f"downloading {ref.name} {step}%")

        try:
            await download(self._client, ref, tmp, on_bytes)
            os.replace(tmp, self.path(sha))
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        st = self.path(sha).stat()
        now = self.clock()
        self._index.entries[sha] = Entry(ref.size, now, now, st.st_mtime_ns, verified=True)
        self.stats.downloads += 1
        self.stats.bytes_downloaded += ref.size
        self._make_room(0)
        self._save()
        return self.path(sha)

    def _intact(self, sha: str, entry: Entry) -> bool:
        """The file is there with the size and modification time the index recorded."""
        try:
            st = self.path(sha).stat()
        except OSError:
            return False
        return st.st_size == entry.size and st.st_mtime_ns == entry.mtime_ns

    # --- eviction --------------------------------------------------------------------------------
    def sweep(self) -> list[str]:
        """Evict unpinned files unused for longer than the TTL."""
        cutoff = self.clock() - self.ttl_s
        expired = [
            sha
            for sha, e in self._index.entries.items()
            if e.last_used < cutoff and not self.pinned(sha) and sha not in self._fetches
        ]
        for sha in expired:
            self._drop(sha)
        if expired:
            self.stats.evictions += len(expired)
            self._save()
        return expired

    def _make_room(self, incoming: int) -> list[str]:
        """Evict least recently used unpinned files until ``incoming`` more bytes fit."""
        entries = self._index.entries
        total = self._index.total_bytes
        evicted: list[str] = []
        if total + incoming <= self.budget_bytes:
            return evicted
        for sha in sorted(entries, key=lambda s: entries[s].last_used):
            if total + incoming <= self.budget_bytes:
                break
            if self.pinned(sha):
                continue
            total -= entries[sha].size
            self._drop(sha)
            evicted.append(sha)
        self.stats.evictions += len(evicted)
        if total + incoming > self.budget_bytes:
            logger.warning(
                "LoRA cache over its budget of %s bytes: running jobs pin %s bytes",
                f"{self.budget_bytes:,}", f"{total:,}",
            )  # fmt: skip
        return evicted

    def _drop(self, sha: str) -> None:
        self._index.entries.pop(sha, None)
        with contextlib.suppress(FileNotFoundError):
            self.path(sha).unlink()
        self.changed.set()

    def _save(self) -> None:
        self.changed.set()
        self._index.save()
