"""A blob store in a local folder: the embedded default of ``make dev`` and of single-host setups.

Writes go to ``<root>/.tmp/<random>`` and are renamed into place once complete and flushed, so a
reader never sees half a file and a failed upload leaves nothing behind (the stored paths never
start with ``.``, so ``.tmp`` cannot collide with a blob). Reads and writes run in a thread, one
chunk at a time. Signed URLs point at the API's ``GET /blobs/{path}?exp=&sig=`` route, which
checks the HMAC (``signing.py``) and serves the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import BinaryIO

from emp_core.blobs import signing
from emp_core.blobs.store import (
    BlobExists,
    BlobNotFound,
    BlobStat,
    BlobStore,
    check_path,
    check_range,
)
from emp_core.errors import EmpError


class BlobConfigError(EmpError):
    status_code = 500
    code = "blob_config"


class LocalBlobStore(BlobStore):
    def __init__(
        self,
        root: Path | str,
        *,
        signing_key: bytes | None = None,
        public_url: str | None = None,
        chunk_size: int | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.signing_key = signing_key
        self.public_url = public_url
        if chunk_size is not None:
            self.chunk_size = chunk_size
        self._tmp = self.root / ".tmp"

    def file(self, path: str) -> Path:
        """Where ``path`` lives on disk (for the API's signed-URL route)."""
        return self.root / check_path(path)

    async def put(
        self, path: str, chunks: AsyncIterable[bytes], *, overwrite: bool = True
    ) -> BlobStat:
        target = self.file(path)
        if not overwrite and target.exists():
            raise BlobExists(f"blob {path!r} already exists", field="path")
        self._tmp.mkdir(parents=True, exist_ok=True)
        temp = self._tmp / uuid.uuid4().hex
        size = 0
        try:
            handle = await asyncio.to_thread(temp.open, "wb")
            try:
                pending: list[bytes] = []
                pending_size = 0
                async for chunk in chunks:
                    if not chunk:
                        continue
                    pending.append(chunk)
                    pending_size += len(chunk)
                    size += len(chunk)
                    if pending_size >= self.chunk_size:
                        await asyncio.to_thread(_write, handle, pending)
                        pending, pending_size = [], 0
                await asyncio.to_thread(_write, handle, pending, sync=True)
            finally:
                await asyncio.to_thread(handle.close)
            await asyncio.to_thread(_place, temp, target, overwrite)
        except FileExistsError:
            raise BlobExists(f"blob {path!r} already exists", field="path") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        return BlobStat(path=path, size=size)

    async def get(
        self, path: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        check_range(offset, length)
        try:
            handle = await asyncio.to_thread(self.file(path).open, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(f"no blob {path!r}", field="path") from None
        try:
            await asyncio.to_thread(handle.seek, offset)
            left = length
            while left is None or left > 0:
                want = self.chunk_size if left is None else min(self.chunk_size, left)
                chunk = await asyncio.to_thread(handle.read, want)
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(handle.close)

    async def stat(self, path: str) -> BlobStat | None:
        target = self.file(path)
        try:
            info = await asyncio.to_thread(target.stat)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not target.is_file():
            return None
        return BlobStat(path=path, size=info.st_size)

    async def delete(self, path: str) -> bool:
        try:
            await asyncio.to_thread(self.file(path).unlink)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return False
        return True

    async def signed_url(self, path: str, *, ttl_s: int) -> str:
        check_path(path)
        if not self.signing_key or not self.public_url:
            raise BlobConfigError(
                "the local blob store needs EMP_BLOB_SIGNING_KEY and EMP_BLOB_PUBLIC_URL "
                "to hand out download URLs"
            )
        return signing.signed_url(self.public_url, self.signing_key, path, ttl_s=ttl_s)


def _write(handle: BinaryIO, chunks: list[bytes], *, sync: bool = False) -> None:
    for chunk in chunks:
        handle.write(chunk)
    if sync:
        handle.flush()
        os.fsync(handle.fileno())


def _place(temp: Path, target: Path, overwrite: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if overwrite:
        os.replace(temp, target)
    else:  # link fails when the target exists: no window in which a second writer wins silently
        os.link(temp, target)
