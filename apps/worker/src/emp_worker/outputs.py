"""Where a connector's output files go: the blob store, under the job owner's prefix.

``Outputs.save`` writes one file to ``outputs/{owner}/{job_id}/{index}.{ext}`` and returns the entry
the job's result lists: path, content type, size, dimensions and a short-lived signed URL (the API
and the studio refresh the URL when they read the job, so an old result never hands out a dead
link). Files go to the blob store, never through Redis. ``discard`` removes what a job wrote, so a
job that fails after writing some outputs leaves none.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import JsonValue

from emp_core.blobs import open_store
from emp_core.errors import EmpError
from emp_core.jobs.job import Job

logger = logging.getLogger(__name__)

# Signed URLs in a fresh result live this long; readers get new ones from the API.
URL_TTL_S = 3600
ANONYMOUS_OWNER = "anonymous"


class BlobWriter(Protocol):
    """The part of core's blob store (``emp_core.blobs``) that outputs need."""

    async def put(
        self, path: str, chunks: AsyncIterable[bytes], *, overwrite: bool = True
    ) -> Any: ...

    async def delete(self, path: str) -> bool: ...

    async def signed_url(self, path: str, *, ttl_s: int) -> str: ...


def output_prefix(job: Job) -> str:
    """``outputs/{owner}/{job_id}``: every output of a job, under its owner's prefix."""
    return f"outputs/{job.customer_id or ANONYMOUS_OWNER}/{job.id}"


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


@dataclass
class Outputs:
    """Writes one job's output files and remembers them, to list or to discard."""

    store: BlobWriter
    job: Job
    url_ttl_s: int = URL_TTL_S
    written: list[str] = field(default_factory=list)

    async def save(
        self, data: bytes, *, ext: str, content_type: str, width: int | None = None,
        height: int | None = None,
    ) -> dict[str, JsonValue]:  # fmt: skip
        path = f"{output_prefix(self.job)}/{len(self.written)}.{ext}"
        await self.store.put(path, _one(data))
        self.written.append(path)
        entry: dict[str, JsonValue] = {
            "path": path,
            "content_type": content_type,
            "size": len(data),
        }
        try:
            entry["url"] = await self.store.signed_url(path, ttl_s=self.url_ttl_s)
        except EmpError as exc:  # a local store without a signing key: readers sign their own
            logger.debug("no signed URL for %s: %s", path, exc)
        if width is not None and height is not None:
            entry["width"], entry["height"] = width, height
        return entry

    async def discard(self) -> None:
        """Delete every file this job wrote (the job failed or was cancelled)."""
        for path in self.written:
            await self.store.delete(path)
        self.written.clear()


class BlobStoreOnDemand:
    """Core's blob store of the ``EMP_BLOB_*`` settings, opened on first use (the connector is
    built before the worker's event loop runs)."""

    def __init__(self) -> None:
        self._store: BlobWriter | None = None

    async def _open(self) -> BlobWriter:
        if self._store is None:
            self._store = await open_store()
        return self._store

    async def put(self, path: str, chunks: AsyncIterable[bytes], *, overwrite: bool = True) -> Any:
        return await (await self._open()).put(path, chunks, overwrite=overwrite)

    async def delete(self, path: str) -> bool:
        return await (await self._open()).delete(path)

    async def signed_url(self, path: str, *, ttl_s: int) -> str:
        return await (await self._open()).signed_url(path, ttl_s=ttl_s)
