"""The blob store interface every implementation satisfies (and the contract tests check).

A blob is named by a relative path of ``/``-separated segments of ``[A-Za-z0-9._-]`` that start
with a letter or digit (so no ``.``, ``..`` or hidden names, no leading ``/``): a path never escapes
the store, whatever the store is, and names starting with ``.`` are free for the stores' own use.

- ``put`` streams from an async byte iterator and is atomic: the blob appears whole or not at all.
  If the iterator raises (an upload cut off, a validation that fails at the last byte), nothing is
  left and an earlier blob of that path is untouched. Memory is bounded by one block, whatever
  the size.
- ``get`` streams, optionally one byte range (``offset``, ``length``), in chunks of at most
  ``chunk_size`` bytes.
- ``signed_url`` is a read-only URL for one blob that expires after ``ttl_s`` seconds; a worker
  fetches it with plain HTTP (SAS for Azure, an HMAC-signed URL the API serves for the local store).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from emp_core.errors import Conflict, InvalidInput, NotFound

# Upload and download granularity: big enough for throughput, small enough that a 2 GB file never
# sits in memory (one block at a time).
CHUNK_SIZE = 4 * 1024 * 1024
MAX_PATH_LENGTH = 1024
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


class BlobNotFound(NotFound):
    code = "blob_not_found"


class BlobExists(Conflict):
    code = "blob_exists"


class InvalidBlobPath(InvalidInput):
    code = "invalid_blob_path"


def check_path(path: str) -> str:
    """``path`` if it names a blob safely, else ``InvalidBlobPath`` saying why."""
    if not path or len(path) > MAX_PATH_LENGTH:
        raise InvalidBlobPath(f"blob path must be 1-{MAX_PATH_LENGTH} characters", field="path")
    for segment in path.split("/"):
        if not _SEGMENT.fullmatch(segment):
            raise InvalidBlobPath(
                f"blob path {path!r}: each '/'-separated part must be letters, digits, '.', '_' "
                "or '-', starting with a letter or digit",
                field="path",
            )
    return path


@dataclass(frozen=True, slots=True)
class BlobStat:
    path: str
    size: int


class BlobStore(ABC):
    """Where large objects live. Implementations: ``LocalBlobStore``, ``AzureBlobStore``."""

    chunk_size: int = CHUNK_SIZE

    @abstractmethod
    async def put(
        self, path: str, chunks: AsyncIterable[bytes], *, overwrite: bool = True
    ) -> BlobStat:
        """Stream ``chunks`` into ``path``, atomically. ``overwrite=False`` raises
        ``BlobExists`` when the path holds a blob (checked before the first byte is read)."""

    @abstractmethod
    def get(self, path: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """The blob's bytes from ``offset`` (``length`` of them, or to the end), in chunks of at
        most ``chunk_size``. ``BlobNotFound`` (raised on first iteration) when it is missing."""

    @abstractmethod
    async def stat(self, path: str) -> BlobStat | None:
        """Size of the blob, or None when there is none."""

    @abstractmethod
    async def delete(self, path: str) -> bool:
        """Remove the blob; True when there was one. Idempotent."""

    @abstractmethod
    async def signed_url(self, path: str, *, ttl_s: int) -> str:
        """A read-only URL for the blob that stops working ``ttl_s`` seconds from now."""

    async def exists(self, path: str) -> bool:
        return await self.stat(path) is not None

    async def read(self, path: str, *, offset: int = 0, length: int | None = None) -> bytes:
        """The whole blob (or range) in memory: for small blobs only."""
        return b"".join([chunk async for chunk in self.get(path, offset=offset, length=length)])

    async def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections."""

    async def __aenter__(self) -> BlobStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def check_range(offset: int, length: int | None) -> None:
    if offset < 0:
        raise InvalidInput("must be >= 0", field="offset")
    if length is not None and length < 0:
        raise InvalidInput("must be >= 0", field="length")
