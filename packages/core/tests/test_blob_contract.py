"""One contract for every blob store: the local folder and Azure Blob Storage (on Azurite)."""

from __future__ import annotations

import hashlib
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from emp_core.blobs import BlobExists, BlobNotFound, BlobStore, InvalidBlobPath, signing
from emp_core.blobs.azure import AzureBlobStore
from emp_core.blobs.local import LocalBlobStore

CHUNK = 256 * 1024  # small blocks so a few MB make many of them
KEY = b"k" * 32


@pytest.fixture(params=["local", "azure"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(
            tmp_path / "blobs", signing_key=KEY, public_url="http://x/blobs", chunk_size=CHUNK
        )
        return
    conn = request.getfixturevalue("azurite_connection_string")
    azure = await AzureBlobStore(conn, f"t{uuid.uuid4().hex[:12]}", chunk_size=CHUNK).start()
    try:
        yield azure
    finally:
        await azure.close()


async def stream(data: bytes, piece: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


async def generated(total: int, piece: int = 64 * 1024) -> AsyncIterator[bytes]:
    """``total`` bytes made on the fly (never held whole): block i is i's byte repeated."""
    sent = 0
    i = 0
    while sent < total:
        n = min(piece, total - sent)
        yield bytes([i % 251]) * n
        sent += n
        i += 1


async def fetch(
    store: BlobStore, url: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    """What a worker does with a signed URL. The local store's URLs are served by the API (tested
    there); here the signature is checked and the file read as that route does."""
    if isinstance(store, LocalBlobStore):
        parsed = urlparse(url)
        path = parsed.path.removeprefix("/blobs/")
        query = parse_qs(parsed.query)
        try:
            signing.verify(KEY, path, query["exp"][0], query["sig"][0])
        except signing.BadSignature:
            return httpx.Response(403)
        return httpx.Response(200, content=await store.read(path))
    async with httpx.AsyncClient() as client:
        return await client.get(url, headers=headers)


async def test_put_get_stat_delete(store: BlobStore) -> None:
    data = b"hello blob" * 1000
    stat = await store.put("users/u1/loras/a.safetensors", stream(data))
    assert stat.size == len(data)
    assert (await store.stat("users/u1/loras/a.safetensors")).size == len(data)  # type: ignore[union-attr]
    assert await store.exists("users/u1/loras/a.safetensors")
    assert await store.read("users/u1/loras/a.safetensors") == data
    assert await store.delete("users/u1/loras/a.safetensors") is True
    assert await store.delete("users/u1/loras/a.safetensors") is False
    assert await store.stat("users/u1/loras/a.safetensors") is None
    assert not await store.exists("users/u1/loras/a.safetensors")


async def test_empty_blob(store: BlobStore) -> None:
    assert (await store.put("e/empty", stream(b""))).size == 0
    assert await store.read("e/empty") == b""
    assert (await store.stat("e/empty")).size == 0  # type: ignore[union-attr]


async def test_missing_blob(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await store.read("no/such/blob")
    assert await store.stat("no/such/blob") is None


async def test_ranged_reads(store: BlobStore) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, several blocks
    await store.put("r/data", stream(data))
    assert await store.read("r/data", offset=10, length=20) == data[10:30]
    assert (
        await store.read("r/data", offset=CHUNK - 3, length=CHUNK + 7)
        == data[CHUNK - 3 : 2 * CHUNK + 4]
    )
    assert await store.read("r/data", offset=len(data) - 5) == data[-5:]
    assert await store.read("r/data", offset=len(data) - 5, length=100) == data[-5:]
    assert await store.read("r/data", offset=len(data)) == b""
    assert await store.read("r/data", offset=3, length=0) == b""


async def test_streams_in_bounded_chunks(store: BlobStore) -> None:
    """A file many blocks long goes in and comes out one bounded block at a time: the largest
    chunk read is at most the block size, and memory held during the upload stays within a few
    blocks (not the file's size)."""
    total = 6 * 1024 * 1024 + 123
    digest = hashlib.sha256()
    async for chunk in generated(total):
        digest.update(chunk)
    tracemalloc.start()
    try:
        await store.put("big/file", generated(total))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 * CHUNK, f"upload held {peak} bytes for a {total}-byte file"
    sizes = []
    check = hashlib.sha256()
    async for chunk in store.get("big/file"):
        sizes.append(len(chunk))
        check.update(chunk)
    assert sum(sizes) == total
    assert max(sizes) <= CHUNK
    assert len(sizes) >= total // CHUNK
    assert check.hexdigest() == digest.hexdigest()


async def test_cut_off_upload_leaves_nothing(store: BlobStore) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * (3 * CHUNK)  # some blocks staged / written
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        await store.put("cut/off", broken())
    assert not await store.exists("cut/off")
    with pytest.raises(BlobNotFound):
        await store.read("cut/off")
    if isinstance(store, LocalBlobStore):
        assert list((store.root / ".tmp").iterdir()) == []


async def test_failed_overwrite_keeps_the_old_blob(store: BlobStore) -> None:
    await store.put("keep/me", stream(b"old"))

    async def broken() -> AsyncIterator[bytes]:
        yield b"n" * (2 * CHUNK)
        raise ValueError("validation failed at the end")

    with pytest.raises(ValueError, match="validation failed"):
        await store.put("keep/me", broken())
    assert await store.read("keep/me") == b"old"


async def test_overwrite_and_no_overwrite(store: BlobStore) -> None:
    await store.put("o/w", stream(b"one"))
    await store.put("o/w", stream(b"two"))
    assert await store.read("o/w") == b"two"
    with pytest.raises(BlobExists):
        await store.put("o/w", stream(b"three"), overwrite=False)
    assert await store.read("o/w") == b"two"
    await store.put("o/new", stream(b"x" * (3 * CHUNK)), overwrite=False)
    assert (await store.stat("o/new")).size == 3 * CHUNK  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "path", ["", "/abs", "a/../b", "..", "a//b", "a/./b", ".hidden", "a/b\n", "a\\b", "é", "a/b/"]
)
async def test_unsafe_paths_are_refused(store: BlobStore, path: str) -> None:
    with pytest.raises(InvalidBlobPath):
        await store.put(path, stream(b"x"))
    with pytest.raises(InvalidBlobPath):
        await store.stat(path)
    with pytest.raises(InvalidBlobPath):
        await store.signed_url(path, ttl_s=60)


async def test_signed_url_reads_the_blob_until_it_expires(store: BlobStore) -> None:
    data = b"signed!" * 100
    await store.put("s/file.bin", stream(data))
    url = await store.signed_url("s/file.bin", ttl_s=300)
    response = await fetch(store, url)
    assert response.status_code == 200
    assert response.content == data
    expired = await store.signed_url("s/file.bin", ttl_s=-600)
    assert (await fetch(store, expired)).status_code == 403
    other = await store.signed_url("s/other.bin", ttl_s=300)
    tampered = other.replace("s/other.bin", "s/file.bin")
    assert (await fetch(store, tampered)).status_code == 403


async def test_signed_url_of_a_deleted_blob_stops_working(store: BlobStore) -> None:
    await store.put("d/gone", stream(b"bye"))
    url = await store.signed_url("d/gone", ttl_s=300)
    await store.delete("d/gone")
    if isinstance(store, LocalBlobStore):
        with pytest.raises(BlobNotFound):
            await fetch(store, url)
    else:
        assert (await fetch(store, url)).status_code == 404
