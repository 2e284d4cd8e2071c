"""Blob stores (ADR-010): large objects (LoRA files, job outputs) behind one small interface.

``open_store(settings)`` picks the implementation from ``EMP_BLOB_URL``: ``file:///path`` for a
local folder (the ``make dev`` default) or ``azure://<container>`` for Azure Blob Storage (Azurite
in the tests). Readers outside the process (workers) get short-lived signed URLs, never storage
keys.
"""

from emp_core.blobs.settings import BlobSettings, open_store
from emp_core.blobs.store import (
    BlobExists,
    BlobNotFound,
    BlobStat,
    BlobStore,
    InvalidBlobPath,
    check_path,
)

__all__ = [
    "BlobExists",
    "BlobNotFound",
    "BlobSettings",
    "BlobStat",
    "BlobStore",
    "InvalidBlobPath",
    "check_path",
    "open_store",
]
