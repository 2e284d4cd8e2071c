"""Which blob store a process opens, from ``EMP_BLOB_*`` settings.

- ``EMP_BLOB_URL``: ``file:///abs/path`` or ``file:relative/path`` for a local folder (default
  ``file:.data/blobs``, what ``make dev`` uses), or ``azure://<container>`` for Azure Blob Storage.
- ``EMP_BLOB_AZURE_CONNECTION_STRING`` (or the SDK's usual ``AZURE_STORAGE_CONNECTION_STRING``):
  the account for ``azure://``. It must carry the account key: download URLs are SAS signed with it.
- ``EMP_BLOB_SIGNING_KEY`` and ``EMP_BLOB_PUBLIC_URL``: for the local store, the HMAC key of its
  signed URLs and where the API serves them (``http://host:port/blobs``). Every API process must
  share the key.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from emp_core.blobs.store import BlobStore
from emp_core.errors import InvalidInput


class BlobSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMP_BLOB_", env_file=".env", extra="ignore")

    url: str = "file:.data/blobs"
    azure_connection_string: SecretStr | None = None
    signing_key: SecretStr | None = None
    public_url: str | None = None


async def open_store(settings: BlobSettings | None = None) -> BlobStore:
    """The store ``settings`` names, ready to use (an Azure container is created if missing)."""
    settings = settings or BlobSettings()
    parsed = urlparse(settings.url)
    if parsed.scheme == "file":
        from emp_core.blobs.local import LocalBlobStore

        path = unquote(parsed.path if not parsed.netloc else f"//{parsed.netloc}{parsed.path}")
        key = settings.signing_key.get_secret_value().encode() if settings.signing_key else None
        return LocalBlobStore(path or ".", signing_key=key, public_url=settings.public_url)
    if parsed.scheme == "azure":
        from emp_core.blobs.azure import AzureBlobStore

        container = parsed.netloc or parsed.path.strip("/")
        secret = settings.azure_connection_string
        conn = (
            secret.get_secret_value()
            if secret
            else os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        )
        if not container or not conn:
            raise InvalidInput(
                "azure://<container> needs a container name and EMP_BLOB_AZURE_CONNECTION_STRING",
                field="EMP_BLOB_URL",
            )
        return await AzureBlobStore(conn, container).start()
    raise InvalidInput(
        f"unknown blob store {settings.url!r}: use file:///path or azure://<container>",
        field="EMP_BLOB_URL",
    )
