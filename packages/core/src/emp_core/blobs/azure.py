"""Azure Blob Storage (production; Azurite in the tests) through azure-storage-blob's async client.

- ``put`` stages blocks of ``chunk_size`` and commits the block list at the end, so the blob
  appears whole or not at all: an upload cut off mid-stream leaves only uncommitted blocks, which
  are no blob (Azure drops them within a week). A blob that fits in one block is one request.
- ``get`` downloads ranged chunks of at most ``chunk_size`` (the client is told so, instead of its
  32 MiB first request).
- ``signed_url`` is a read-only SAS for one blob, signed with the account key of the connection
  string, starting five minutes in the past to allow for clock skew.
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobBlock, BlobSasPermissions, generate_blob_sas
from azure.storage.blob.aio import BlobServiceClient

from emp_core.blobs.store import (
    CHUNK_SIZE,
    BlobExists,
    BlobNotFound,
    BlobStat,
    BlobStore,
    check_path,
    check_range,
)

CLOCK_SKEW = timedelta(minutes=5)


class AzureBlobStore(BlobStore):
    def __init__(
        self, connection_string: str, container: str, *, chunk_size: int = CHUNK_SIZE
    ) -> None:
        self.chunk_size = chunk_size
        self.service = BlobServiceClient.from_connection_string(
            connection_string,
            max_single_get_size=chunk_size,
            max_chunk_get_size=chunk_size,
            max_block_size=chunk_size,
            max_single_put_size=chunk_size,
        )
        self.container = self.service.get_container_client(container)
        self.container_name = container

    async def start(self) -> AzureBlobStore:
        """Create the container when it does not exist yet."""
        with contextlib.suppress(ResourceExistsError):
            await self.container.create_container()
        return self

    async def close(self) -> None:
        await self.service.close()

    async def put(
        self, path: str, chunks: AsyncIterable[bytes], *, overwrite: bool = True
    ) -> BlobStat:
        blob = self.container.get_blob_client(check_path(path))
        if not overwrite and await blob.exists():
            raise BlobExists(f"blob {path!r} already exists", field="path")
        prefix = uuid.uuid4().hex
        blocks: list[BlobBlock] = []
        pending = bytearray()
        size = 0
        try:
            async for chunk in chunks:
                pending += chunk
                size += len(chunk)
                while len(pending) >= self.chunk_size:
                    await self._stage(blob, prefix, blocks, bytes(pending[: self.chunk_size]))
                    del pending[: self.chunk_size]
            if not blocks:  # it fits in one request
                await blob.upload_blob(bytes(pending), overwrite=overwrite)
            else:
                if pending:
                    await self._stage(blob, prefix, blocks, bytes(pending))
                await blob.commit_block_list(blocks, if_none_match=None if overwrite else "*")
        except (ResourceExistsError, ResourceModifiedError):
            raise BlobExists(f"blob {path!r} already exists", field="path") from None
        return BlobStat(path=path, size=size)

    @staticmethod
    async def _stage(blob: object, prefix: str, blocks: list[BlobBlock], data: bytes) -> None:
        # Block ids of one blob must all have the same length: a fixed-width counter.
        block_id = base64.b64encode(f"{prefix}-{len(blocks):08d}".encode()).decode()
        await blob.stage_block(block_id, data, length=len(data))  # type: ignore[attr-defined]
        blocks.append(BlobBlock(block_id=block_id))

    async def get(
        self, path: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        check_range(offset, length)
        blob = self.container.get_blob_client(check_path(path))
        if length == 0:
            if not await blob.exists():
                raise BlobNotFound(f"no blob {path!r}", field="path")
            return
        try:
            downloader = await blob.download_blob(offset=offset, length=length)
        except ResourceNotFoundError:
            raise BlobNotFound(f"no blob {path!r}", field="path") from None
        except HttpResponseError as exc:
            if exc.status_code == 416:  # the range starts at or past the end: nothing to read
                return
            raise
        async for chunk in downloader.chunks():
            yield chunk

    async def stat(self, path: str) -> BlobStat | None:
        blob = self.container.get_blob_client(check_path(path))
        try:
            props = await blob.get_blob_properties()
        except ResourceNotFoundError:
            return None
        return BlobStat(path=path, size=int(props.size))

    async def delete(self, path: str) -> bool:
        blob = self.container.get_blob_client(check_path(path))
        try:
            await blob.delete_blob()
        except ResourceNotFoundError:
            return False
        return True

    async def signed_url(self, path: str, *, ttl_s: int) -> str:
        blob = self.container.get_blob_client(check_path(path))
        now = datetime.now(UTC)
        credential = self.service.credential
        sas = generate_blob_sas(
            account_name=self.service.account_name or "",
            container_name=self.container_name,
            blob_name=path,
            account_key=credential.account_key,
            permission=BlobSasPermissions(read=True),
            start=now - CLOCK_SKEW,
            expiry=now + timedelta(seconds=ttl_s),
        )
        return f"{blob.url}?{sas}"
