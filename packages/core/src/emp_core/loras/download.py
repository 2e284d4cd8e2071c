"""Fetching one LoRA file by its signed URL: streamed to a temporary file, hashed on the way,
checked against the size and sha256 the job carries.

What can go wrong, and whether trying again can help:

- the link answers 401/403/404/410: the LoRA was deleted, or its link expired or was never valid
  (``LoraUnavailable``, not retryable: the same job would get the same answer);
- the bytes do not match the recorded size or hash (``LoraMismatch``, not retryable: the store
  holds other bytes than the upload recorded);
- anything else (a connection refused or cut off, a 5xx, a timeout) is ``LoraDownloadFailed``,
  retryable.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from emp_core.errors import EmpError
from emp_core.jobs.loras import LoraRef

if TYPE_CHECKING:  # imported when first used: it adds a second to a loaded host's start-up
    import httpx

# Called with (bytes received, total bytes).
ByteProgress = Callable[[int, int], Awaitable[None]]

_CHUNK = 1 << 20
_GONE = {401, 403, 404, 410}


class LoraFetchError(EmpError):
    """A LoRA a job needs could not be fetched; ``retryable`` says whether trying again helps."""

    code = "lora_unavailable"
    retryable = True


class LoraUnavailable(LoraFetchError):
    retryable = False


class LoraMismatch(LoraFetchError):
    retryable = False


class LoraDownloadFailed(LoraFetchError):
    retryable = True


def _label(ref: LoraRef) -> str:
    return f"LoRA {ref.name} (id {ref.id})"


async def download(
    client: httpx.AsyncClient, ref: LoraRef, dest: Path, on_bytes: ByteProgress | None = None
) -> None:
    """Write ``ref``'s bytes to ``dest`` (a temporary path the caller renames once this returns),
    fsynced, or raise ``LoraFetchError`` with ``dest`` in whatever state it was left."""
    import httpx

    digest = hashlib.sha256()
    received = 0
    try:
        async with client.stream("GET", ref.url) as response:
            if response.status_code in _GONE:
                raise LoraUnavailable(
                    f"{_label(ref)} is no longer available (HTTP {response.status_code}): it was "
                    "deleted, or its download link expired",
                    field="loras",
                )
            if response.status_code != 200:
                raise LoraDownloadFailed(
                    f"{_label(ref)} could not be downloaded: HTTP {response.status_code}",
                    field="loras",
                )
            with dest.open("wb") as out:
                async for chunk in response.aiter_bytes(_CHUNK):
                    received += len(chunk)
                    if received > ref.size:
                        raise LoraMismatch(
                            f"{_label(ref)} is larger than its recorded {ref.size:,} bytes",
                            field="loras",
                        )
                    digest.update(chunk)
                    out.write(chunk)
                    if on_bytes is not None:
                        await on_bytes(received, ref.size)
                out.flush()
                os.fsync(out.fileno())
    except httpx.HTTPError as exc:
        raise LoraDownloadFailed(
            f"{_label(ref)} could not be downloaded after {received:,} of {ref.size:,} bytes: "
            f"{type(exc).__name__}: {exc}",
            field="loras",
        ) from None
    if received != ref.size:
        raise LoraDownloadFailed(
            f"{_label(ref)} download ended after {received:,} of {ref.size:,} bytes",
            field="loras",
        )
    if digest.hexdigest() != ref.sha256:
        raise LoraMismatch(
            f"{_label(ref)} does not match its recorded sha256 {ref.sha256[:12]}… "
            f"(got {digest.hexdigest()[:12]}…)",
            field="loras",
        )


def new_client() -> httpx.AsyncClient:
    """The HTTP client a cache downloads with (follows redirects; 30 s to connect, 60 s between
    bytes)."""
    import httpx

    return httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=60.0), follow_redirects=True)


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
