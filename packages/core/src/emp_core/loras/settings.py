"""LoRA upload limits and download-URL lifetime, from ``EMP_LORA_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from emp_core.loras.safetensors import MAX_BYTES, MAX_HEADER_BYTES


class LoraSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMP_LORA_", env_file=".env", extra="ignore")

    # The largest file an upload may be (2 GiB) and the largest safetensors header (16 MiB).
    max_bytes: int = Field(default=MAX_BYTES, gt=0)
    max_header_bytes: int = Field(default=MAX_HEADER_BYTES, gt=0)
    # How long the signed download URL put into a job stays valid: 7 days, the job retention
    # (EMP_RETENTION_SECONDS). A job may wait in the queue for as long as it is kept, and the URL
    # is minted once, at submit, because workers hold no storage keys and no SQL to mint another.
    # It grants read of one file only, and deleting the LoRA deletes the blob, which ends it early.
    url_ttl_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    # An upload that sends nothing for this long is abandoned (408) and leaves nothing behind.
    upload_idle_seconds: float = Field(default=60.0, gt=0)
