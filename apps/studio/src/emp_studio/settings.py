"""Settings of the studio process, read from ``EMP_STUDIO_*`` environment variables.

The queue (``EMP_REDIS_URL``, ``EMP_QUEUE``, …) and the database (``EMP_DATABASE_URL``) have
settings classes of their own in ``emp_core``; this one holds what only the studio needs.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_LENGTH = 32
# Values copied from examples and templates: a key anyone can read signs anyone's session.
_PLACEHOLDERS = ("change", "secret", "example", "placeholder", "xxxx", "dev-key", "todo")


class StudioSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMP_STUDIO_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=0, le=65535)
    log_level: str = "info"
    # Signs the session cookie. Unset: a random key per process, so sessions end when the process
    # restarts and several processes would not accept each other's cookies; set it in production.
    secret_key: SecretStr | None = None
    session_max_age_seconds: int = Field(default=14 * 24 * 3600, gt=0)
    # Send the session cookie over HTTPS only; on wherever the studio is served over TLS.
    cookie_secure: bool = False
    page_size: int = Field(default=25, ge=1, le=200)
    # The dashboard re-renders at most this often however many events arrive (s), and at least
    # every ``dashboard_idle_seconds`` so that workers going quiet show without an event.
    dashboard_min_interval_seconds: float = Field(default=1.0, gt=0)
    dashboard_idle_seconds: float = Field(default=5.0, gt=0)
    # Events a live page may have waiting; past it the oldest progress events are dropped.
    ws_backlog: int = Field(default=256, ge=8)
    # Largest form body accepted (bytes): above the 1 MB payload limit, so that an oversized
    # payload is refused next to its field and only anything bigger with 413.
    max_body_bytes: int = Field(default=2_000_000, gt=0)
    # A request's head must arrive within header_timeout_seconds, its body within
    # body_timeout_seconds: slow clients cannot hold requests open.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)

    @field_validator("secret_key")
    @classmethod
    def _real_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value()
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters")
        if any(word in secret.lower() for word in _PLACEHOLDERS):
            raise ValueError("looks like a placeholder; generate one: `openssl rand -hex 32`")
        return value
